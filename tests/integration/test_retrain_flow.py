"""The `retrain` flow end to end on the test profile: demo corpus -> ... -> evaluate -> champion, one MLflow
parent run with a child per stage; a rerun with nothing changed is all cache hits; a changed setting
reruns its stage and everything downstream only; a cached stage whose output is gone runs again."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from emotionthinker.retrain import STAGES

pytestmark = pytest.mark.usefixtures("prefect_harness")
RUN_STAGES = [s for s in STAGES if s != "demo_corpus"]  # the demo corpus is files only, no MLflow run


def test_retrain_chains_every_stage_nests_runs_caches_and_reruns_what_changed(cfg, config_file):
    from mlflow import MlflowClient

    from flows.retrain import retrain_flow

    path = config_file()
    t0 = time.perf_counter()
    first = retrain_flow(profile="test", config_file=path)
    first_s = time.perf_counter() - t0

    assert list(first["stages"]) == list(STAGES) and not any(first["cached"].values())
    assert first["promotion"]["decision"] == "first_champion"
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    parent = client.get_run(first["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "retrain"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{first['run_id']}'")
    child_ids = {r.info.run_id for r in children}
    for stage in RUN_STAGES:
        assert first["stages"][stage]["run_id"] in child_ids, f"{stage} run is not a child of the retrain run"
        assert parent.data.tags[f"stage.{stage}.run_id"] == first["stages"][stage]["run_id"]
    assert "promote" in {r.data.tags["stage"] for r in children}
    assert {"stage_seconds.sft", "policy.uar", "sft.cot/format_rate", "wall_s"} <= set(parent.data.metrics)
    assert {a.path for a in client.list_artifacts(first["run_id"])} >= {"summary.txt", "stages.json"}
    policy = first["stages"]["grpo_ptr"]["registered"]
    assert str(client.get_model_version_by_alias(policy["name"], "champion").version) == policy["version"]
    for stage in STAGES:
        assert f"\n{stage} " in first["summary"]

    t0 = time.perf_counter()
    second = retrain_flow(profile="test", config_file=path)
    second_s = time.perf_counter() - t0
    assert all(second["cached"].values()), second["cached"]
    assert {s: r.get("run_id") for s, r in second["stages"].items()} == {s: r.get("run_id") for s, r in first["stages"].items()}
    assert second["promotion"]["decision"] == "already_champion"
    # Inside the flow (the process around it also starts Prefect's API client and MLflow: load-dependent).
    assert second["wall_s"] < first["wall_s"] / 3, (first_s, second_s, second["summary"])

    # A downstream setting changes and an upstream output is lost: exactly those stages run again.
    cfg.grpo.learning_rate *= 2
    shutil.rmtree(first["stages"]["sft_data"]["data_dir"])
    third = retrain_flow(profile="test", config_file=config_file(cfg))
    rerun = {s for s, c in third["cached"].items() if not c}
    assert rerun == {"sft_data", "grpo_ptr", "evaluate"}, third["cached"]
    assert Path(third["stages"]["sft_data"]["data_dir"]).is_dir()
    assert third["stages"]["grpo_ptr"]["registered"]["version"] != policy["version"]


def test_a_corpus_without_its_folder_is_refused_before_anything_runs(cfg, config_file):
    from emotionthinker.retrain import RetrainError
    from flows.retrain import retrain_flow

    with pytest.raises(RetrainError, match="needs its folder"):
        retrain_flow(profile="test", config_file=config_file(), corpus="ravdess")
    assert not (cfg.data_dir / "manifests").exists()


def test_the_flow_holds_the_workspace_for_its_whole_run(cfg, config_file):
    """The scheduled run and a manual one (started some other way than the CLI, which checks first)."""
    from emotionthinker.locks import file_lock
    from emotionthinker.retrain import RetrainBusy, lock_path
    from flows.retrain import retrain_flow

    with file_lock(lock_path(cfg), 0):
        with pytest.raises(RetrainBusy, match="another retrain is running in this workspace"):
            retrain_flow(profile="test", config_file=config_file(), corpus="demo")
    assert not (cfg.data_dir / "demo").exists() and not (cfg.data_dir / "manifests").exists()  # no stage ran


def test_an_evaluation_split_without_clips_stops_the_chain_right_after_ingest(cfg, config_file, tmp_path):
    """RAVDESS actors 01-02 alone (../shared/data) are all 'train' under the by-actor protocol: the chain used
    to train every model before its evaluation found no 'test' clip."""
    from mlflow import MlflowClient

    from emotionthinker.retrain import RetrainError
    from flows.retrain import retrain_flow
    from tests.code.corpus_fixtures import write_wav

    root = tmp_path / "ravdess"
    for actor, freq in ((1, 120.0), (2, 220.0)):
        for emotion in (1, 5):
            write_wav(root / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", seconds=1.0, freq=freq)
    with pytest.raises(RetrainError, match=r"retrain.eval_split 'test' has no clips in .*manifest.jsonl \(its splits: train 4\)"):
        retrain_flow(profile="test", config_file=config_file(), corpus="ravdess", root=str(root))
    assert (cfg.data_dir / "manifests" / "ravdess").is_dir() and not (cfg.data_dir / "annotated").exists()
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    [parent] = client.search_runs([client.get_experiment_by_name(cfg.services.mlflow_experiment).experiment_id],
                                  "tags.stage = 'retrain'")  # fmt: skip
    assert parent.info.status == "FAILED"
