"""Steps of the grpo_ptr flow around the trainer: the prompt failure bound, the run fingerprint that names
the training folder, and what train_logged does with a finished, a torn or a shorter earlier run."""

from __future__ import annotations

import json

import pytest
from test_grpo_trainer import grpo_cfg, write_clips

from emotionthinker.validation import ValidationFailed
from models import grpo_pipeline as P


def _prompt_file(tmp_path, n_good: int, n_bad: int):
    clips = write_clips(tmp_path / "audio", n_good)
    rows = [{"id": p.id, "audio_path": p.audio_path, "emotion": p.gold} for p in clips]
    rows += [{"id": f"bad{i}", "audio_path": str(tmp_path / f"missing{i}.wav"), "emotion": "sad"} for i in range(n_bad)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_too_many_quarantined_prompts_stop_the_run_and_a_small_pick_is_no_failure(cfg, tmp_path):
    path = _prompt_file(tmp_path, n_good=2, n_bad=1)
    cfg.validation.max_failure_rate = 0.3
    with pytest.raises(ValidationFailed, match="unreadable_path"):
        P.load_data(path, cfg)  # 1 of 3
    cfg.validation.max_failure_rate = 0.4
    cfg.grpo.max_prompts = 1  # rate over the usable prompts (1 of 3), not over the one picked (1 of 2)
    data = P.load_data(path, cfg)
    assert len(data.prompts) == 1 and data.n_usable == 2 and [q["id"] for q in data.quarantined] == ["bad0"]


def test_the_fingerprint_follows_what_is_trained_and_nothing_else(cfg, tmp_path):
    data = P.load_data(_prompt_file(tmp_path, 2, 0), cfg)
    base = grpo_cfg(cfg, tmp_path)
    fp = P.run_fingerprint(base, data, "policy-a", "rm-a")

    def with_grpo(**kw):
        return P.run_fingerprint(grpo_cfg(cfg, tmp_path, **kw), data, "policy-a", "rm-a")

    # Bookkeeping and the step count stay out: a longer run continues the shorter one's folder.
    assert with_grpo(max_steps=40, save_steps=7, output_dir=str(tmp_path / "elsewhere"), registered_alias="x") == fp
    assert with_grpo(learning_rate=3e-5) != fp and with_grpo(no_trust_weight=True) != fp
    assert P.run_fingerprint(base, data, "policy-b", "rm-a") != fp
    assert P.run_fingerprint(base, data, "policy-a", "rm-b") != fp
    other = cfg.model_copy(deep=True)
    other.profile = "tiny"
    assert P.run_fingerprint(grpo_cfg(other, tmp_path), data, "policy-a", "rm-a") != fp
    fewer = P.load_data(_prompt_file(tmp_path / "one", 1, 0), cfg)
    assert P.run_fingerprint(base, fewer, "policy-a", "rm-a") != fp
    # Without R_t the reward model decides nothing, so changing it must not start a new run.
    plain = grpo_cfg(cfg, tmp_path, plain_grpo=True)
    assert P.run_fingerprint(plain, data, "policy-a", "rm-a") == P.run_fingerprint(plain, data, "policy-a", "rm-b")
    assert P.reward_identity(plain, "rm-a") is None and P.reward_identity(base, "rm-a") == "rm-a"


def test_train_logged_reuses_a_finished_run_continues_a_longer_one_and_drops_a_torn_final(cfg, tmp_path):
    data = P.load_data(_prompt_file(tmp_path, 2, 0), cfg)

    def train(max_steps: int):
        c = grpo_cfg(cfg, tmp_path, plain_grpo=True, max_steps=max_steps, save_steps=1, per_device_train_batch_size=2)
        return P.train_logged(data, c, None)

    first = train(2)
    assert (first.global_step, first.reused, first.resumed_from) == (2, False, None)
    folder = tmp_path / "grpo"
    [run_dir] = [p for p in folder.iterdir() if p.is_dir()]
    assert first.model_dir == str(run_dir / "final") and first.fingerprint in run_dir.name

    again = train(2)
    assert again.reused and again.global_step == 2

    longer = train(3)  # same fingerprint: continues from the last checkpoint instead of starting over
    assert not longer.reused and longer.global_step == 3 and longer.resumed_from.endswith("checkpoint-2")
    assert [p for p in folder.iterdir() if p.is_dir()] == [run_dir]
    assert [h["step"] for h in longer.history] == [1, 2, 3]

    # A crash while the final model was being saved leaves a final folder without its result file:
    # it is removed and the run finishes again from the checkpoints, not reused half-written.
    (run_dir / "final" / "grpo_result.json").unlink()
    (run_dir / "final" / "partial.safetensors").write_bytes(b"torn")
    redone = train(3)
    assert not redone.reused and redone.global_step == 3
    assert not (run_dir / "final" / "partial.safetensors").exists()
    assert (run_dir / "final" / "grpo_result.json").is_file()
