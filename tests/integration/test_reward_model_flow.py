"""The `reward_model` flow end to end on the test profile: demo-corpus RM tuples -> held-out split -> LoRA
training -> held-out evaluation (trained and untrained base) -> MLflow run -> `emotionthinker-reward@challenger`;
a rerun reuses the trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from rm_fixtures import shared_rm_tuples  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_reward_model_flow_trains_evaluates_registers_and_reuses(cfg, config_file, tmp_path):
    from mlflow import MlflowClient

    from flows.reward_model import reward_model_flow
    from models import reward_model as R
    from models.backbone import AudioLM

    # one tuple with a missing clip: quarantined with its reason, the flow goes on (1/91 < max_failure_rate)
    tuples = tmp_path / "rm_tuples.jsonl"
    lines = shared_rm_tuples(cfg).read_text().splitlines()
    broken = json.loads(lines[0]) | {"id": "missing-clip#gold"}
    broken["q"] = {**broken["q"], "audio_path": str(tmp_path / "nowhere.wav")}
    tuples.write_text("\n".join(lines + [json.dumps(broken)]) + "\n")
    cfg.rm.eval_base = True
    out = reward_model_flow(rm_tuples=str(tuples), profile="test", config_file=config_file())

    counts = out["counts"]
    assert out["split_by"] == "by_split" and counts["quarantined"] == 1
    assert (counts["train"], counts["held_out"]) == (30, 30) and counts["train_records"] == 6
    tr = out["training"]
    assert tr["global_step"] == 2 and not tr["reused"] and tr["parameters"]["lora_layers"] > 0
    assert [step for step, _ in tr["losses"]] == [1, 2]
    final = Path(out["model_dir"])
    assert final.name == "final" and final.parent.name.startswith("rm-lora-")
    manifest = json.loads((final / "audiolm.json").read_text())
    assert manifest["source"] == "reward_model" and manifest["prompt_version"] == R.RM_PROMPT_VERSION
    assert (final / "model.safetensors").is_file() and not any(p.suffix in (".bin", ".pt", ".pth") for p in final.iterdir())
    for metrics in (out["eval"], out["base_eval"]):
        assert metrics["n"] == cfg.rm.eval_max_tuples and 0 <= metrics["parse_rate"] <= 1
    assert set(out["data_version"]) == {"rm_tuples_sha1"}

    reg = out["registered"]
    assert (reg["name"], reg["version"], reg["alias"]) == ("emotionthinker-reward", "1", "challenger")
    scorer = R.RewardModel.from_source(reg["source"], cfg)
    trained = AudioLM.load(final)
    for (name, a), (_, b) in zip(trained.model.state_dict().items(), scorer.lm.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    cfg.rm.scorer_source = reg["source"]
    assert R.RewardModel.for_grpo(cfg).lm.source == reg["source"]

    client = MlflowClient(cfg.tracking_uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "reward_model"
    assert run.data.tags["data_version.rm_tuples_sha1"] == out["data_version"]["rm_tuples_sha1"]
    assert run.data.tags["registered_model"] == "emotionthinker-reward/1"
    assert {"eval/parse_rate", "eval/n", "base_eval/parse_rate", "train/train_loss", "wall_s"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(out["run_id"], "train/loss")] == [1, 2]
    assert run.data.params["split_by"] == "by_split" and run.data.params["rm.method"] == "lora"
    artifacts = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"eval_predictions.json", "eval_confusion.png", "base_eval_predictions.json", "train_loss.png",
            "quarantine.json", "model"} <= artifacts  # fmt: skip
    rows = json.loads(Path(client.download_artifacts(out["run_id"], "eval_predictions.json", str(tmp_path))).read_text())
    assert len(rows["data"]) == cfg.rm.sample_predictions and "raw_output" in rows["columns"]

    cfg.rm.eval_base = False
    again = reward_model_flow(rm_tuples=str(tuples), profile="test", config_file=config_file())
    assert again["training"]["reused"] and again["model_dir"] == out["model_dir"]
    assert again["registered"]["version"] == "1" and again["base_eval"] == {}
