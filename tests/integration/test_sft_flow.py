"""The `sft` flow end to end on the test profile: demo-corpus samples -> stage I -> stage II -> generations ->
evaluation vs base -> `emotionthinker-base@challenger`, with MLflow runs; a rerun reuses the finished stages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from sft_fixtures import shared_sft_dir  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_sft_flow_trains_evaluates_registers_and_reuses(cfg, config_file):
    from mlflow import MlflowClient

    from flows.sft import sft_flow
    from models.backbone import AudioLM

    data = shared_sft_dir(cfg)
    out = sft_flow(profile="test", config_file=config_file(), data_dir=str(data))

    s1, s2 = out["stages"]["stage1"], out["stages"]["stage2"]
    assert s1["global_step"] == s2["global_step"] == 2 and not s1["reused"] and not s2["reused"]
    assert s1["parameters"]["encoder_layers_trained"] == 1 and s2["parameters"]["lora_layers"] > 0
    assert s2["parameters"]["trainable_parameters"] < s1["parameters"]["trainable_parameters"]
    assert [step for step, _ in s1["losses"]] == [1, 2]
    assert Path(out["model_dir"]).parent.name.startswith("stage2-") and Path(out["model_dir"]).name == "final"
    assert set(out["data_version"]) == {"sft_files_sha1"}  # the sample files are not DVC-tracked here
    assert out["quarantined"] == {"stage1.train": 0, "stage1.validation": 0, "stage2.train": 0, "stage2.validation": 0}
    for metrics in (out["eval"], out["base_eval"]):
        assert {"cot/format_rate", "cot/emotion_accuracy", "attribute/accuracy"} <= set(metrics)
        assert metrics["cot/n"] == 2 and 0 <= metrics["cot/format_rate"] <= 1
    assert len(out["sample_generations"]) == 2 and all(isinstance(r["generated"], str) for r in out["sample_generations"])

    reg = out["registered"]
    assert (reg["name"], reg["version"], reg["alias"]) == ("emotionthinker-base", "1", "challenger")
    from_registry = AudioLM.from_source("registry:emotionthinker-base@challenger", cfg)
    trained = AudioLM.load(out["model_dir"])
    for (name, a), (_, b) in zip(trained.model.state_dict().items(), from_registry.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in Path(out["model_dir"]).iterdir())
    # Stage II's LoRA training is in the final model: it differs from stage I's in the adapted tensors only,
    # and equals stage I with the saved adapter merged in (a skipped merge would register stage I).
    from models.lora import merge_adapter_dir

    stage1 = AudioLM.load(s1["model_dir"]).model.state_dict()
    final = trained.model.state_dict()
    changed = [n for n in final if not torch.equal(final[n], stage1[n])]
    assert changed and all("language_model" in n for n in changed), changed[:5]
    remerged = AudioLM.load(s1["model_dir"])
    merge_adapter_dir(remerged, Path(out["model_dir"]).parent / "adapter")
    for name, tensor in remerged.model.state_dict().items():
        torch.testing.assert_close(tensor, final[name], atol=1e-6, rtol=1e-5)

    client = MlflowClient(cfg.tracking_uri)
    parent = client.get_run(out["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["data_version.sft_files_sha1"] == out["data_version"]["sft_files_sha1"]
    assert parent.data.tags["registered_model"] == "emotionthinker-base/1"
    assert {"eval/cot/format_rate", "base_eval/attribute/accuracy", "wall_s"} <= set(parent.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"sample_generations.json", "eval_generations.json", "base_eval_generations.json", "model"} <= artifacts
    assert "model.safetensors" in {Path(a.path).name for a in client.list_artifacts(out["run_id"], "model")}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    by_stage = {r.data.tags["stage"]: r for r in children}
    assert set(by_stage) == {"sft_stage1", "sft_stage2"}
    history = client.get_metric_history(by_stage["sft_stage1"].info.run_id, "stage1/loss")
    assert [m.step for m in history] == [1, 2]
    assert "stage1_loss.png" in {a.path for a in client.list_artifacts(by_stage["sft_stage1"].info.run_id)}

    again = sft_flow(profile="test", config_file=config_file(), data_dir=str(data))
    assert all(s["reused"] for s in again["stages"].values())  # same inputs: nothing retrained
    assert again["model_dir"] == out["model_dir"] and again["registered"]["version"] == "1"
