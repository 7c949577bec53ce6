"""GRPO-PTR trainer on the test profile (random tiny Qwen2-Audio): prefix-shared sampling and log-probs,
prompt data, rewards as the paper defines them, the progressive switch at the scheduled step, ablations,
checkpoint/resume and MLflow logging.

Correctness of completions is scripted by replacing the outcome reward (a random model never answers
in tags), and R_t comes from deterministic scorers, so every expected number is computed by hand.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models import grpo_trainer as T
from models.backbone import AudioLM
from models.grpo_data import GrpoDataError, GrpoDataset, GrpoPrompt, load_grpo_data, parse_prompt_records
from models.grpo_rollout import group_logprobs, sample_groups, suppressed_tokens
from models.rewards import Scores

LABELS = ("happy", "sad", "angry", "neutral")


def write_clips(folder: Path, n: int = 4) -> list[GrpoPrompt]:
    folder.mkdir(parents=True, exist_ok=True)
    prompts = []
    for i in range(n):
        t = np.arange(16000) / 16000
        y = (0.3 * np.sin(2 * np.pi * (140 + 40 * i) * t)).astype(np.float32)
        path = folder / f"clip{i}.wav"
        sf.write(path, y, 16000)
        prompts.append(GrpoPrompt(f"clip{i}", str(path), LABELS[i % len(LABELS)]))
    return prompts


def grpo_cfg(cfg, tmp_path: Path, **grpo):
    base = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2,
            "max_completion_length": 8, "output_dir": str(tmp_path / "grpo")}  # fmt: skip
    return cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={**base, **grpo})})


class PositionScorer:
    """R_t by position within each call: scores[i % len(scores)] for all four criteria; counts calls."""

    def __init__(self, scores=(1.0, 5.0)):
        self.scores, self.calls = scores, []

    def score(self, audios, questions, reasonings):
        self.calls.append(len(reasonings))
        return [Scores(*(self.scores[i % len(self.scores)],) * 4) for i in range(len(reasonings))]


@pytest.fixture
def scripted(monkeypatch):
    """Outcome reward scripted per step: local row i is correct iff (i % K) < correct_per_group[step]."""
    state = {"per_group": {}, "step": 0, "i": 0, "k": 2}

    def outcome(text, gold):
        i = state["i"]
        state["i"] += 1
        return 1.0 if (i % state["k"]) < state["per_group"].get(state["step"], 0) else 0.0

    original = T.GrpoPtrTrainer.step

    def step(self, step):
        state["step"], state["i"], state["k"] = step, 0, self.g.num_generations
        return original(self, step)

    monkeypatch.setattr(T, "outcome_reward", outcome)
    monkeypatch.setattr(T.GrpoPtrTrainer, "step", step)
    return state


def make_trainer(cfg, prompts, scorer=None, run=None, **kw) -> T.GrpoPtrTrainer:
    lm = AudioLM.from_source(cfg.models.policy_source, cfg)
    return T.GrpoPtrTrainer(cfg, lm, GrpoDataset(prompts, cfg), cfg.grpo.output_dir, scorer=scorer, run=run, **kw)


# -- rollout -----------------------------------------------------------------------------------------
def test_shared_prefix_logprobs_and_gradients_equal_the_full_forward(cfg, tmp_path):
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 3)]
    torch.manual_seed(0)
    gen = sample_groups(lm, audios, None, k=3, max_new_tokens=12, temperature=1.0)
    assert gen.num_return_sequences == 3 and len(gen.completion_ids) == 6
    assert not any(t in suppressed_tokens(lm) for c in gen.completion_ids for t in c)
    assert gen.texts == lm.tokenizer.batch_decode(gen.completion_ids, skip_special_tokens=True)

    full = lm.completion_logprobs(gen.inputs, gen.completion_ids)
    full.logprobs.sum().backward()
    expected = {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}
    lm.model.zero_grad()
    shared = group_logprobs(lm, gen.inputs, gen.completion_ids, suppress=())
    shared.logprobs.sum().backward()
    assert torch.equal(shared.mask, full.mask)
    torch.testing.assert_close(shared.logprobs, full.logprobs, atol=1e-5, rtol=1e-5)
    # The same parameters get a gradient (a detached projector or encoder would silently drop out of both checks)...
    assert {n for n, p in lm.model.named_parameters() if p.grad is not None} == set(expected)
    assert any("multi_modal_projector" in n for n in expected) and any("audio_tower" in n for n in expected)
    for name, p in lm.model.named_parameters():  # ... and the same gradient
        if p.grad is not None:
            torch.testing.assert_close(p.grad, expected[name], atol=1e-5, rtol=1e-4)
    # Excluding the audio token renormalises the distribution: every log-prob rises a little.
    assert (group_logprobs(lm, gen.inputs, gen.completion_ids).logprobs[full.mask] >= full.logprobs[full.mask] - 1e-6).all()


def test_sampling_is_reproducible_with_a_seeded_generator(cfg):
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    audio = [np.sin(np.arange(16000) / 10).astype(np.float32) * 0.2]
    a = sample_groups(lm, audio, None, 4, 10, 1.0, torch.Generator().manual_seed(3))
    b = sample_groups(lm, audio, None, 4, 10, 1.0, torch.Generator().manual_seed(3))
    c = sample_groups(lm, audio, None, 4, 10, 1.0, torch.Generator().manual_seed(4))
    assert a.completion_ids == b.completion_ids != c.completion_ids


# -- data --------------------------------------------------------------------------------------------
def test_prompt_records_resolve_paths_labels_splits_and_quarantine(cfg, tmp_path):
    clips = write_clips(tmp_path / "audio", 2)
    records = [
        {"id": "a", "audio_path": "audio/clip0.wav", "emotion": "Happiness", "split": "train"},  # relative, synonym
        {"id": "b", "audio": [clips[1].audio_path], "meta": {"emotion": "sad", "split": "train"}},  # SFT sample
        {"id": "b2", "audio": [clips[1].audio_path], "meta": {"emotion": "sad"}},  # the same clip again: once
        {"id": "c", "audio_path": clips[0].audio_path, "emotion": "boredom"},
        {"id": "d", "emotion": "sad"},
        {"id": "e", "audio_path": clips[0].audio_path, "emotion": "sad", "split": "test"},
        {"id": "f", "audio_path": str(tmp_path / "missing.wav"), "emotion": "fear"},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    prompts, quarantined, skipped = parse_prompt_records(records, tmp_path, ["train"])
    assert [(p.id, p.gold) for p in prompts] == [("a", "happy"), ("b", "sad"), ("f", "fear")]
    assert prompts[0].audio_path == str((tmp_path / "audio/clip0.wav").resolve()) and skipped == 1
    assert {q["id"]: q["reason"] for q in quarantined} == {"c": "label_outside_label_space", "d": "no_audio_path"}

    data = load_grpo_data(path, cfg)
    assert [p.id for p in data.prompts] == ["a", "b"]
    assert data.counts()["quarantine_by_reason"] == {"label_outside_label_space": 1, "no_audio_path": 1, "unreadable_path": 1}
    assert set(data.data_version) == {"grpo_prompts_sha1"}
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps(records[3]) + "\n")
    with pytest.raises(GrpoDataError, match="no usable prompt"):
        load_grpo_data(empty, cfg)


def test_step_prompts_depend_only_on_the_step_and_cover_each_epoch(cfg, tmp_path):
    ds = GrpoDataset(write_clips(tmp_path, 4), cfg)
    steps = [ds.step_prompt_indices(s, 2) for s in range(1, 7)]
    assert steps == [GrpoDataset(ds.prompts, cfg).step_prompt_indices(s, 2) for s in range(1, 7)]
    for epoch in range(3):  # every epoch is a permutation of the prompts
        assert sorted(steps[2 * epoch] + steps[2 * epoch + 1]) == [0, 1, 2, 3]
    assert steps[:2] != steps[2:4]


# -- trainer -----------------------------------------------------------------------------------------
def test_rewards_trust_and_advantages_follow_the_paper(cfg, tmp_path, scripted):
    """R = 0.3 R_f + 1.0 R_o + 0.5 tau R_t; tau = exp(c - w) when wrong answers out-score right ones."""
    c = grpo_cfg(cfg, tmp_path, no_progressive=True, max_steps=1, beta=0.0)
    scripted["per_group"] = {1: 1}  # one right, one wrong completion per group
    scorer = PositionScorer((1.0, 5.0))  # right answers' reasoning 1/5 -> R_t 0.2, wrong ones 5/5 -> R_t 1.0
    trainer = make_trainer(c, write_clips(tmp_path), scorer)
    metrics, rows = trainer.step(1)
    assert len({r["completion"] for r in rows}) == len(rows) == 4  # no two reasonings merged by the scorer's dedupe
    tau = math.exp(0.2 - 1.0)
    for r in rows:
        right = r["outcome"] == 1.0
        assert r["reasoning"] == pytest.approx(0.2 if right else 1.0)
        assert r["tau"] == pytest.approx(tau, rel=1e-6)
        assert r["reward"] == pytest.approx(0.3 * r["format"] + 1.0 * r["outcome"] + 0.5 * tau * r["reasoning"], rel=1e-6)
    # Within each group of two: advantages are +-(d / 2) / (std + 1e-4) with std = |d| / sqrt(2), i.e. ~ +-0.707.
    by_group = {}
    for r in rows:
        by_group.setdefault(r["prompt_id"], []).append(r)
    for pair in by_group.values():
        d = pair[0]["reward"] - pair[1]["reward"]
        expected = (d / 2) / (abs(d) / math.sqrt(2) + 1e-4)
        assert pair[0]["advantage"] == pytest.approx(expected, rel=1e-5)
        assert pair[1]["advantage"] == pytest.approx(-expected, rel=1e-5)
    assert metrics["tau/mean"] == pytest.approx(tau) and metrics["tau/frac_below_1"] == 1.0 and metrics["accuracy"] == 0.5
    assert metrics["rewards/reasoning/mean"] == pytest.approx(0.6) and metrics["reasoning/on"] == 1.0

    # No-trust ablation: the same completions and R_t, tau = 1 in the reward (still logged as measured).
    c2 = grpo_cfg(cfg, tmp_path, no_progressive=True, no_trust_weight=True, max_steps=1, beta=0.0)
    metrics2, rows2 = make_trainer(c2, write_clips(tmp_path), PositionScorer((1.0, 5.0))).step(1)
    assert [r["completion"] for r in rows2] == [r["completion"] for r in rows]
    for r in rows2:
        assert r["reward"] == pytest.approx(0.3 * r["format"] + r["outcome"] + 0.5 * r["reasoning"], rel=1e-6)
    assert metrics2["tau/mean"] == pytest.approx(tau)


def test_reasoning_reward_switches_on_at_the_scheduled_step(cfg, tmp_path, scripted, config_file):
    """Accuracy 0, .5, .5, 1, 1 with window 2 and threshold .6: window means .25, .5, .75 -> on from step 4."""
    from mlflow import MlflowClient

    from emotionthinker.tracking import start_stage_run

    c = grpo_cfg(cfg, tmp_path, max_steps=5, save_steps=5, progressive_threshold=0.6, progressive_window=2,
                 log_completions_steps=2)  # fmt: skip
    scripted["per_group"] = {2: 1, 3: 1, 4: 2, 5: 2}
    scorer = PositionScorer()
    with start_stage_run(c, "grpo_ptr") as run:
        result = make_trainer(c, write_clips(tmp_path), scorer, run=run).train()
    assert [h["accuracy"] for h in result.history] == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert [h["reasoning/on"] for h in result.history] == [0, 0, 0, 1, 1]
    assert result.switch_step == 4 and scorer.calls == [4, 4]  # R_t is computed only while it counts
    assert "rewards/reasoning/mean" not in result.history[2] and "tau/mean" in result.history[3]

    client = MlflowClient(c.tracking_uri)
    data = client.get_run(run.run_id).data
    assert data.tags["reasoning_switch_step"] == "4"
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "reasoning/switch_step")] == [(4, 4.0)]
    assert [m.step for m in client.get_metric_history(run.run_id, "accuracy")] == [1, 2, 3, 4, 5]
    for key in ("reward", "rewards/format/mean", "rewards/outcome/mean", "kl", "loss", "clip_ratio/region_mean",
                "completions/mean_length", "tau/min", "tau/frac_below_1", "summary/reward_last5"):
        assert key in data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.run_id)} | {a.path for a in client.list_artifacts(run.run_id, "completions")}
    assert {T.CURVE_FILE, "completions/step_00001.json", "completions/step_00004.json", "completions/step_00005.json"} <= artifacts


def crash_at_step(crash_step: int, cfg, prompts, monkeypatch) -> None:
    """Train until `crash_step` raises (a simulated crash), leaving the checkpoints written before it."""
    original = T.GrpoPtrTrainer.step

    def crashing(self, step):
        if step == crash_step:
            raise RuntimeError("simulated crash")
        return original(self, step)

    monkeypatch.setattr(T.GrpoPtrTrainer, "step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(cfg, prompts, PositionScorer()).train()
    monkeypatch.setattr(T.GrpoPtrTrainer, "step", original)


def test_a_resumed_progressive_run_keeps_its_accuracy_window(cfg, tmp_path, scripted, monkeypatch, config_file):
    """Accuracy 1, 1, .5, .5, .5 with window 3 and threshold .6: on from step 3, which needs the accuracies of
    steps 1-2 from before the crash; a resume that lost them would see [.5], [.5, .5], ... and never switch.
    The resumed run's MLflow run holds the whole curve, the steps before the checkpoint included."""
    from mlflow import MlflowClient

    from emotionthinker.tracking import start_stage_run

    scripted["per_group"] = {1: 2, 2: 2, 3: 1, 4: 1, 5: 1}
    prompts = write_clips(tmp_path / "audio")

    def config(name):
        return grpo_cfg(cfg, tmp_path, output_dir=str(tmp_path / name), max_steps=5, save_steps=2,
                        progressive_threshold=0.6, progressive_window=3)  # fmt: skip

    full = make_trainer(config("full"), prompts, PositionScorer()).train()
    assert [h["accuracy"] for h in full.history] == [1.0, 1.0, 0.5, 0.5, 0.5] and full.switch_step == 3
    crash_at_step(3, config("crash"), prompts, monkeypatch)
    with start_stage_run(config("crash"), "grpo_ptr") as run:
        resumed = make_trainer(config("crash"), prompts, PositionScorer(), run=run).train()
    assert resumed.resumed_from.endswith("checkpoint-2")
    client = MlflowClient(cfg.tracking_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "accuracy")] == [
        (1, 1.0), (2, 1.0), (3, 0.5), (4, 0.5), (5, 0.5)]  # fmt: skip
    assert client.get_run(run.run_id).data.tags["resumed_at_step"] == "2"
    # Switched before the crash (step 3; resumed from checkpoint-4): the new run is told when.
    crash_at_step(5, config("late"), prompts, monkeypatch)
    with start_stage_run(config("late"), "grpo_ptr") as run:
        make_trainer(config("late"), prompts, PositionScorer(), run=run).train()
    assert client.get_run(run.run_id).data.tags["reasoning_switch_step"] == "3"
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "reasoning/switch_step")] == [(3, 3.0)]
    assert resumed.switch_step == 3 and [h["reasoning/on"] for h in resumed.history] == [0, 0, 1, 1, 1]
    for a, b in zip(full.history, resumed.history):
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)


def test_plain_grpo_never_scores_and_needs_no_reward_model(cfg, tmp_path, scripted):
    c = grpo_cfg(cfg, tmp_path, plain_grpo=True, max_steps=2, save_steps=5)
    scripted["per_group"] = {1: 2, 2: 2}
    result = make_trainer(c, write_clips(tmp_path)).train()
    assert result.switch_step is None and [h["reasoning/on"] for h in result.history] == [0, 0]
    with pytest.raises(T.GrpoTrainingError, match="no reward model"):
        make_trainer(grpo_cfg(cfg, tmp_path), write_clips(tmp_path))
    with pytest.raises(T.GrpoTrainingError, match="multiple of num_generations"):
        make_trainer(grpo_cfg(cfg, tmp_path, per_device_train_batch_size=3), write_clips(tmp_path), PositionScorer())


def test_a_resumed_run_continues_at_the_saved_step_and_matches_an_uninterrupted_one(cfg, tmp_path, scripted, monkeypatch):
    scripted["per_group"] = {1: 1, 2: 0, 3: 1, 4: 2}  # advantages non-zero: the weights move
    prompts = write_clips(tmp_path / "audio")
    full_cfg = grpo_cfg(cfg, tmp_path, output_dir=str(tmp_path / "full"), no_progressive=True)
    full = make_trainer(full_cfg, prompts, PositionScorer()).train()
    assert full.resumed_from is None and [h["step"] for h in full.history] == [1, 2, 3, 4]

    crash_cfg = grpo_cfg(cfg, tmp_path, output_dir=str(tmp_path / "crash"), no_progressive=True)
    original = T.GrpoPtrTrainer.step
    crash_at_step(3, crash_cfg, prompts, monkeypatch)
    assert sorted(p.name for p in (tmp_path / "crash").iterdir()) == ["checkpoint-2"]

    steps_run = []
    trainer = make_trainer(crash_cfg, prompts, PositionScorer())
    monkeypatch.setattr(trainer, "step", lambda s: steps_run.append(s) or original(trainer, s))
    resumed = trainer.train()
    assert steps_run == [3, 4] and resumed.resumed_from.endswith("checkpoint-2") and resumed.global_step == 4
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(full.history, resumed.history):
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6) and a["accuracy"] == b["accuracy"]
    assert resumed.switch_step == full.switch_step == 1
    a, b = AudioLM.load(full.model_dir).model.state_dict(), AudioLM.load(resumed.model_dir).model.state_dict()
    changed = [k for k in a if not torch.equal(a[k], AudioLM.from_source(cfg.models.policy_source, cfg).model.state_dict()[k])]
    assert changed, "training moved no weight"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    assert json.loads((Path(resumed.model_dir) / "audiolm.json").read_text())["source"] == "grpo-ptr"
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in Path(resumed.model_dir).iterdir())

    # Finished: only the last checkpoint stays (a longer run continues from it); train_grpo reuses the run.
    assert sorted(p.name for p in (tmp_path / "crash").glob("checkpoint-*")) == ["checkpoint-4"]
    again = T.train_grpo(crash_cfg, prompts, tmp_path / "crash", scorer=PositionScorer())
    assert again.reused and again.global_step == 4
    # A torn checkpoint (no trainer_state.json) is never resumed.
    shutil.rmtree(tmp_path / "crash" / "final")
    torn = tmp_path / "crash" / "checkpoint-6"
    shutil.copytree(tmp_path / "crash" / "checkpoint-4", torn)
    (torn / T.STATE_FILE).unlink()
    assert make_trainer(crash_cfg, prompts, PositionScorer()).resume() == 4


def test_num_iterations_reuses_the_batch_with_real_ratios(cfg, tmp_path, scripted):
    c = grpo_cfg(cfg, tmp_path, plain_grpo=True, max_steps=1, num_iterations=3, learning_rate=1e-2, epsilon=0.05)
    scripted["per_group"] = {1: 1}
    metrics, _ = make_trainer(c, write_clips(tmp_path)).step(1)
    # The third update sees a policy two steps away from the sampling one: ratios leave [0.95, 1.05].
    assert metrics["clip_ratio/region_mean"] > 0 and metrics["kl"] > 0


def test_load_scorer_follows_the_ablation_flags(cfg):
    from models.grpo_scoring import SharedPrefixRewardScorer
    from models.reward_model import RewardModel

    assert T.load_scorer(cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"plain_grpo": True})}), None) is None
    untrained = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"untrained_rm": True})})
    scorer = T.load_scorer(untrained, None)
    assert isinstance(scorer, SharedPrefixRewardScorer) and isinstance(scorer, T.ReasoningScorer)
    assert isinstance(scorer.rm, RewardModel) and scorer.lm.source == cfg.models.reward_source
    plain = T.load_scorer(untrained.model_copy(update={"grpo": untrained.grpo.model_copy(update={"shared_prefix": False})}), None)
    assert isinstance(plain, RewardModel)


def test_shared_prefix_reward_scorer_answers_what_the_reward_model_answers(cfg):
    """Greedy answers equal RewardModel.generate's row for row; clips repeat as a group's completions do."""
    from emotionthinker.labels import USER_PROMPT
    from models.grpo_scoring import SharedPrefixRewardScorer
    from models.reward_model import RewardModel

    rm = RewardModel.from_source("random:qwen2audio-tiny", cfg)
    rm.batch_size = 8
    rng = np.random.default_rng(1)
    a = (0.2 * np.sin(np.arange(32000) / 7)).astype(np.float32)
    b = (0.1 * rng.standard_normal(48000)).astype(np.float32)
    audios = [a, b, a, a, b]
    reasonings = ["The voice is high and fast.", "Low, slow: sad.", "x", "Loud and tense, clearly angry at it.", ""]
    expected = rm.generate(audios, USER_PROMPT, reasonings)
    scorer = SharedPrefixRewardScorer(rm)
    assert scorer.generate(audios, [USER_PROMPT] * 5, reasonings) == expected
    before = rm.stats.n_scored
    scores = scorer.score(audios, [USER_PROMPT] * 5, reasonings)
    assert len(scores) == 5 and rm.stats.n_scored == before + 5  # parsed and counted by the reward model


def test_constrained_reward_answers_take_the_likeliest_digit_in_each_slot(cfg):
    """The teacher-forced skeleton holds, in each score slot, the argmax over 1..5 given the digits chosen
    before it, as one plain forward pass per row computes it (no shared prefix, no cache, no padding)."""
    from emotionthinker.labels import USER_PROMPT
    from models.grpo_scoring import SharedPrefixRewardScorer
    from models.reward_model import RM_SYSTEM, RewardModel, rm_prompt, score_slots, target_json
    from models.rewards import CRITERIA

    rm = RewardModel.from_source("random:qwen2audio-tiny", cfg)
    rm.batch_size = 8
    a = (0.2 * np.sin(np.arange(32000) / 7)).astype(np.float32)
    b = (0.1 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32)
    audios, reasonings = [a, b, a], ["The voice is high and fast.", "Low, slow: sad.", "Loud and tense, clearly angry."]
    scorer = SharedPrefixRewardScorer(rm, constrained=True)
    assert scorer.skeleton is not None
    answers = scorer.generate(audios, [USER_PROMPT] * 3, reasonings)
    core, slots = rm.lm._core(), score_slots(rm.lm.tokenizer)
    weighted = SharedPrefixRewardScorer(rm, constrained=True, expected=True).score(audios, [USER_PROMPT] * 3, reasonings)
    for audio, reasoning, answer, w in zip(audios, reasonings, answers, weighted):
        chosen = {c: 3 for c in CRITERIA}
        for c, (position, candidates) in zip(CRITERIA, slots):
            inputs = rm.lm.build_chat_inputs([audio], [rm_prompt(USER_PROMPT, reasoning)], [target_json(chosen)], system=RM_SYSTEM)
            width = inputs["completion_mask"].shape[1]
            with torch.no_grad():
                hidden = core.model(**rm.lm._forward_inputs(inputs), use_cache=False).last_hidden_state
                logits = core.lm_head(hidden[0, hidden.shape[1] - width + position - 1]).float()[candidates]
            chosen[c] = int(logits.argmax()) + 1
            # expected=True: sum_d d * p(d) over the digits at the same slot, the argmax digit fed on.
            assert getattr(w, c) == pytest.approx(float(torch.softmax(logits, -1) @ torch.arange(1.0, 6.0)), abs=1e-4)
        assert answer == target_json(chosen)
    assert all(s is not None for s in scorer.score(audios, [USER_PROMPT] * 3, reasonings))  # never the fallback
    assert rm.stats.n_unparseable == 0 and rm.stats.n_scored == 6


def test_an_update_moves_probability_towards_positive_advantages(cfg, tmp_path, scripted):
    """After one step (beta 0) the sampled completions with A > 0 gain log-probability and those with A < 0 lose it."""
    c = grpo_cfg(cfg, tmp_path, plain_grpo=True, beta=0.0, max_steps=1, learning_rate=1e-3)
    scripted["per_group"] = {1: 1}
    trainer = make_trainer(c, write_clips(tmp_path))
    buckets = trainer._local_buckets(1)
    assert [b.k for b in buckets] == [2]
    b = buckets[0]
    audios = [trainer.dataset.audio(i) for i in b.indices]
    generator = torch.Generator().manual_seed(T._seed_for(c.grpo.seed, 1, 0))
    gen = sample_groups(trainer.policy, audios, None, b.k, c.grpo.max_completion_length, c.grpo.temperature, generator)
    with torch.no_grad():
        before = group_logprobs(trainer.policy, gen.inputs, gen.completion_ids).logprobs.sum(-1)
    _, rows = trainer.step(1)
    assert [r["completion"] for r in rows] == gen.texts  # the step sampled exactly these
    with torch.no_grad():
        after = group_logprobs(trainer.policy, gen.inputs, gen.completion_ids).logprobs.sum(-1)
    advantages = torch.tensor([r["advantage"] for r in rows])
    assert (advantages > 0).sum() == 2 and (advantages < 0).sum() == 2
    assert ((after - before)[advantages > 0] > 0).all() and ((after - before)[advantages < 0] < 0).all()


def test_a_checkpoint_the_disk_cannot_hold_fails_before_writing_and_the_rerun_resumes(cfg, tmp_path, scripted, disk_full):
    """A save cut off by a full disk leaves a torn folder after the step's work; the guard refuses it first and
    names the checkpoint a rerun resumes from."""
    from models import checkpoints as C

    scripted["per_group"] = {1: 1, 2: 0, 3: 1, 4: 2}
    prompts = write_clips(tmp_path / "audio")
    c = grpo_cfg(cfg, tmp_path, output_dir=str(tmp_path / "run"), no_progressive=True)
    first = tmp_path / "run" / "checkpoint-2"
    disk_full(after=first)  # room for the first checkpoint only
    trainer = make_trainer(c, prompts, PositionScorer())
    with pytest.raises(C.CheckpointSpaceError, match=r"(?s)next checkpoint in .*run.*0\.00 GB is free.*resumes from checkpoint-2"):
        trainer.train()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-2"]  # nothing torn
    assert trainer.step_done == 4  # it failed at the second save, after step 4's work

    size, estimate = C.folder_bytes(first), C.state_bytes_estimate(trainer.accelerator.unwrap_model(trainer.module))
    assert 0.8 * estimate <= size <= C.SPACE_MARGIN * estimate, (size, estimate)

    disk_full.undo()
    resumed = make_trainer(c, prompts, PositionScorer()).train()
    assert resumed.resumed_from.endswith("checkpoint-2") and resumed.global_step == 4

    # A disk that cannot hold even the first checkpoint stops the run before its first step.
    disk_full()
    fresh = make_trainer(grpo_cfg(cfg, tmp_path, output_dir=str(tmp_path / "small")), prompts, PositionScorer())
    with pytest.raises(C.CheckpointSpaceError, match="starts again from step 0"):
        fresh.train()
    assert fresh.step_done == 0


def test_a_second_process_on_the_same_output_folder_is_refused(cfg, tmp_path):
    from emotionthinker.locks import file_lock

    folder = tmp_path / "grpo-busy"
    with file_lock(tmp_path / "grpo-busy.lock", 0):  # as another process training into `folder` holds it
        with pytest.raises(T.GrpoTrainingError, match=r"another process is training into .*grpo-busy: pid \d+ on "):
            T.run_grpo(grpo_cfg(cfg, tmp_path), write_clips(tmp_path / "audio"), folder, scorer=PositionScorer())
    assert not folder.exists()
