"""Cache keys of the retrain chain: a stage's key moves with its own settings, its inputs, the code
and anything upstream, and with nothing else; stale cached results are recognised."""

from __future__ import annotations

import os
import shutil

import pytest

from emotionthinker import retrain as R


def keys(cfg, code="abc", inputs=None) -> dict[str, str]:
    out: dict[str, str] = {}
    for stage in R.STAGES:
        out[stage] = R.stage_key(stage, cfg, code, out, (inputs or {}).get(stage))
    return out


def test_keys_are_stable_and_move_with_their_own_settings_and_everything_upstream(cfg):
    base = keys(cfg)
    assert keys(cfg) == base
    cfg.sft.stage2_learning_rate *= 2
    after = keys(cfg)
    changed = {s for s in R.STAGES if after[s] != base[s]}
    assert changed == {"sft", "grpo_ptr", "evaluate"}  # the reward model does not read SFT settings


def test_unrelated_settings_and_other_inputs(cfg):
    base = keys(cfg)
    cfg.schedule.cron = "0 4 * * *"
    cfg.promotion.min_delta = 0.1
    assert keys(cfg) == base  # when it runs and how it is promoted do not change what it trains
    moved = keys(cfg, inputs={"ingest": {"root": "other-md5"}})
    assert {s for s in R.STAGES if moved[s] != base[s]} == set(R.STAGES) - {"demo_corpus"}
    assert all(keys(cfg, code="def")[s] != base[s] for s in R.STAGES)


def test_unknown_stage_and_missing_upstream_are_errors(cfg):
    with pytest.raises(ValueError, match="unknown retrain stage"):
        R.stage_key("train", cfg, "abc", {})
    with pytest.raises(ValueError, match="needs the keys"):
        R.stage_key("sft", cfg, "abc", {})


def test_missing_outputs_name_what_is_gone(tmp_path):
    kept = tmp_path / "model"
    kept.mkdir()
    assert R.missing_outputs("sft", {"model_dir": str(kept), "run_id": "r1"}, lambda r: True) == []
    gone = R.missing_outputs("sft", {"model_dir": str(tmp_path / "nope"), "run_id": "r1"}, lambda r: False)
    assert gone == [f"model_dir={tmp_path / 'nope'}", "MLflow run r1"]
    assert R.missing_outputs("cot", {"cot": str(kept)}) == ["rm_tuples=None"]


@pytest.mark.parametrize(("exc", "transient"), [
    (ConnectionError("reset"), True), (TimeoutError(), True), (RuntimeError("database is locked"), True),
    (ValueError("bad label 'x'"), False), (None, False),
])  # fmt: skip
def test_only_transient_failures_are_retried(exc, transient):
    assert R.is_transient(exc) is transient


def test_summary_lists_every_stage_and_the_headline_numbers():
    stages = [
        R.StageOutcome("ingest", 3.0, False, {"run_id": "a", "data_version": {"data/manifests/demo": "m.dir"}}),
        R.StageOutcome("sft", 9.5, True, {"run_id": "b", "eval": {"cot/format_rate": 1.0}, "base_eval": {"cot/format_rate": 0.0},
                                          "registered": {"name": "emotionthinker-base", "version": "3", "alias": "challenger"}}),
    ]  # fmt: skip
    s = R.RetrainSummary("tiny", stages, {"decision": "kept", "champion_after": "2", "reason": "worse"}, 12.5, "p", "http://ui",
                         R.collect_data_versions([o.result for o in stages]))  # fmt: skip
    text = s.as_text()
    assert "ingest" in text and "sft" in text and "yes" in text and "m.dir" in text
    assert "sft.cot/format_rate" in text and "base.cot/format_rate" in text
    assert "emotionthinker-base v3 @challenger" in text and "kept - champion now v2" in text
    assert s.metrics() == {"sft.cot/format_rate": 1.0, "base.cot/format_rate": 0.0}


def test_the_reward_model_reads_only_the_reasoning_weights_of_grpo(cfg):
    base = keys(cfg)
    cfg.grpo.learning_rate *= 2
    assert keys(cfg)["reward_model"] == base["reward_model"] != keys(cfg)["grpo_ptr"]
    cfg.grpo.reasoning_weights = {**dict.fromkeys(cfg.grpo.reasoning_weights, 0.2), "factual_alignment": 0.4}
    assert keys(cfg)["reward_model"] != base["reward_model"]


def test_the_same_folder_read_by_another_adapter_or_from_another_place_is_another_ingest(cfg, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes(b"RIFF")
    same = R.ingest_inputs("ravdess", clips)
    assert R.ingest_inputs("ravdess", clips) == same
    copy = shutil.copytree(clips, tmp_path / "elsewhere" / "clips")
    assert R.content_hash(copy) == R.content_hash(clips)
    ingest = {R.stage_key("ingest", cfg, "abc", {}, i) for i in (same, R.ingest_inputs("emodb", clips), R.ingest_inputs("ravdess", copy))}
    assert len(ingest) == 3  # the same content each time: only the adapter or the place differ


def test_the_annotate_key_follows_the_gender_model_only_where_a_clip_needs_it(cfg, tmp_path):
    import json

    from tests.registered_models import register_tiny_model

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "gender": "female"}) + "\n")
    assert R.annotate_inputs(cfg, manifest) == {}  # every clip has its corpus gender: the model is never asked
    manifest.write_text(json.dumps({"id": "a", "gender": "female"}) + "\n" + json.dumps({"id": "b", "gender": None}) + "\n")
    assert R.annotate_inputs(cfg, manifest) == {"gender_model": "none"}  # nothing registered yet

    versions = []
    for seed in (1, 2):  # the champion alias moves to a new version: no config changes, the key must
        register_tiny_model(cfg, tmp_path, "emotionthinker-gender", seed, stage="train_gender", alias="champion",
                            marker="gender_classifier.json")  # fmt: skip
        versions.append(R.annotate_inputs(cfg, manifest)["gender_model"])
    assert versions[0].startswith("emotionthinker-gender/1#") and versions[1].startswith("emotionthinker-gender/2#")
    keys = {R.stage_key("annotate", cfg, "abc", {"ingest": "i"}, {"gender_model": v}) for v in versions}
    assert len(keys) == 2

    local = tmp_path / "local.json"
    local.write_text("{}")
    cfg.traits.gender_model = str(local)
    first = R.annotate_inputs(cfg, manifest)["gender_model"]
    local.write_text('{"retrained": 1}')
    assert R.annotate_inputs(cfg, manifest)["gender_model"] != first


def test_the_corpus_folder_is_checked_before_any_stage_and_taken_against_the_project_root(tmp_path, monkeypatch):
    """`serve` runs the scheduled retrain in the folder it was started in; retrain.root: ../shared/data/ravdess
    resolved against that folder, failing after Prefect had started with a traceback from the ingest task."""
    from emotionthinker import config as config_module
    from emotionthinker.config import load_config

    root = tmp_path / "project"
    (tmp_path / "shared" / "data" / "ravdess").mkdir(parents=True)
    monkeypatch.setattr(config_module, "PROJECT_ROOT", root)
    monkeypatch.chdir(tmp_path / "shared")  # where ../shared/... does not exist
    cfg = load_config("test", environ={}, overrides={"retrain": {"corpus": "ravdess", "root": "../shared/data/ravdess"}})
    assert R.corpus_root(cfg, "ravdess", None) == str(tmp_path / "shared" / "data" / "ravdess")  # link names kept
    assert R.corpus_root(cfg, "ravdess", str(tmp_path / "shared" / "data")) == str(tmp_path / "shared" / "data")
    cfg.retrain.root = "../shared/data/ravdes"
    with pytest.raises(R.RetrainError, match=r"ravdess corpus folder not found: .*/shared/data/ravdes \(retrain.root "
                                             r"'../shared/data/ravdes', a relative folder is taken against the project root\)"):
        R.corpus_root(cfg, "ravdess", None)
    cfg.retrain.root = ""
    assert R.corpus_root(cfg, "demo", None) is None  # synthesised by the flow
    with pytest.raises(R.RetrainError, match="needs its folder"):
        R.corpus_root(cfg, "ravdess", None)


    # The command says so before Prefect starts (the flow was never called) and exits 2 (bad input).
    import flows.retrain
    from typer.testing import CliRunner

    from emotionthinker.cli import app

    monkeypatch.setattr(flows.retrain, "retrain_flow", lambda **kw: pytest.fail(f"the flow started: {kw}"))
    config_file = tmp_path / "nightly.yaml"
    config_file.write_text("retrain:\n  corpus: ravdess\n  root: ../shared/data/ravdes\n")
    for args in (["-c", str(config_file)], ["--corpus", "ravdess", "--root", "missing"]):
        res = CliRunner().invoke(app, ["retrain", "-p", "test", *args])
        assert res.exit_code == 2 and "retrain cannot start: ravdess corpus folder not found" in res.output, res.output


def test_the_evaluation_split_must_hold_clips(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"id": "a", "split": "train"}\n{"id": "b", "split": "validation"}\n')
    R.check_eval_split(manifest, "validation")
    R.check_eval_split(manifest, "all")  # every clip, the trained ones too: the user's explicit choice
    with pytest.raises(R.RetrainError, match=r"'test' has no clips in .* \(its splits: train 1, validation 1\)"):
        R.check_eval_split(manifest, "test")


def test_a_second_retrain_in_the_workspace_is_refused_before_prefect_starts(tmp_path, monkeypatch):
    """A manual retrain while the scheduled one runs would train into the same stage folders at once."""
    import flows.retrain
    from typer.testing import CliRunner

    from emotionthinker.cli import app
    from emotionthinker.config import load_config
    from emotionthinker.locks import file_lock

    config_file = tmp_path / "site.yaml"
    config_file.write_text(f"paths:\n  workspace: {tmp_path / 'ws'}\n  data: {tmp_path / 'data'}\n")
    cfg = load_config("test", config_file, environ={})
    monkeypatch.setattr(flows.retrain, "retrain_flow", lambda **kw: pytest.fail(f"the flow started: {kw}"))
    with file_lock(R.lock_path(cfg), 0):  # as the running retrain holds it
        with pytest.raises(R.RetrainBusy, match=rf"another retrain is running in this workspace \({cfg.workspace}\): "
                                                rf"pid {os.getpid()} on "):
            with R.workspace_lock(cfg):
                pytest.fail("two retrains in one workspace")
        res = CliRunner().invoke(app, ["retrain", "-p", "test", "-c", str(config_file)])
        assert res.exit_code == 2 and "retrain cannot start: another retrain is running" in res.output, res.output
        cfg.retrain.lock_timeout_s = 0.2
        with pytest.raises(R.RetrainBusy, match=r"`\), still after retrain.lock_timeout_s=0.2 s\. Wait"):
            with R.workspace_lock(cfg):
                pytest.fail("two retrains in one workspace")
    with R.workspace_lock(cfg) as waited:  # free again
        assert waited < 1
