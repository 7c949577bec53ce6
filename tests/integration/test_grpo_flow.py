"""The `grpo_ptr` flow end to end on the test profile: demo-corpus records -> GRPO-PTR with the real
RewardModel (a random test model, whose answers are unparseable: R_t falls back, counted) -> MLflow run
with per-step metrics, completion tables and the curve -> `emotionthinker-policy@challenger`; a rerun
reuses the trained policy; the CLI command runs the same flow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from sft_fixtures import shared_sft_dir  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_harness")


def demo_records(cfg) -> Path:
    """The test profile's demo corpus metadata (audio_path relative to it, emotion, split), one bad record added."""
    metadata = shared_sft_dir(cfg).parent / "demo" / "metadata.jsonl"
    out = Path(cfg.workspace) / "prompts.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in metadata.read_text().splitlines() if line.strip()]
    for r in rows:
        r["audio_path"] = str(metadata.parent / r["audio_path"])
    rows.append({"id": "bad", "audio_path": rows[0]["audio_path"], "emotion": "boredom", "split": "train"})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_grpo_ptr_flow_trains_logs_registers_and_reuses(cfg, config_file):
    from mlflow import MlflowClient

    from flows.grpo_ptr import grpo_ptr_flow
    from models.backbone import AudioLM

    cfg.grpo.per_device_train_batch_size = 4
    cfg.grpo.max_prompts = 6
    prompts = demo_records(cfg)
    out = grpo_ptr_flow(str(prompts), reward_source="random:qwen2audio-tiny", profile="test",
                        config_file=config_file(), no_progressive=True, max_steps=2)  # fmt: skip

    assert out["global_step"] == 2 and out["switch_step"] == 1 and not out["reused"]
    assert out["counts"]["prompts"] == 6 and out["counts"]["quarantine_by_reason"] == {"label_outside_label_space": 1}
    assert out["policy_source"] == cfg.models.policy_source
    reg = out["registered"]
    assert (reg["name"], reg["version"], reg["alias"]) == ("emotionthinker-policy", "1", "challenger")
    registered = AudioLM.from_source("registry:emotionthinker-policy@challenger", cfg).model.state_dict()
    for name, tensor in AudioLM.load(out["model_dir"]).model.state_dict().items():
        assert torch.equal(tensor, registered[name]), name

    client = MlflowClient(cfg.tracking_uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "grpo_ptr"
    assert run.data.tags["reasoning_switch_step"] == "1" and run.data.tags["registered_model"] == "emotionthinker-policy/1"
    assert run.data.tags["data_version.grpo_prompts_sha1"] == out["data_version"]["grpo_prompts_sha1"]
    assert run.data.params["ablation.no_progressive"] == "true" and run.data.params["reasoning_schedule"] == "always"
    history = client.get_metric_history(out["run_id"], "rewards/reasoning/mean")
    # Constrained answers (grpo.constrained_reward_answers): even the random reward model gives four scores,
    # so R_t = sum_j w_j g_j / 5 lies in [0.2, 1] and nothing falls back.
    assert [m.step for m in history] == [1, 2] and all(0.2 <= m.value <= 1.0 for m in history)
    unparseable = client.get_metric_history(out["run_id"], "reasoning/unparseable")
    assert [m.value for m in unparseable] == [0.0, 0.0]
    artifacts = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"reward_accuracy.png", "completions", "quarantine.json", "model"} <= artifacts

    again = grpo_ptr_flow(str(prompts), reward_source="random:qwen2audio-tiny", profile="test",
                          config_file=config_file(), no_progressive=True, max_steps=2)  # fmt: skip
    assert again["reused"] and again["model_dir"] == out["model_dir"] and again["registered"]["version"] == "1"


def test_train_grpo_command(cfg, config_file):
    from typer.testing import CliRunner

    from emotionthinker.cli import app

    cfg.grpo.per_device_train_batch_size = 2
    cfg.grpo.max_prompts = 2
    cfg.grpo.register_model = False
    prompts = demo_records(cfg)
    result = CliRunner().invoke(app, ["train", "grpo", "--data", str(prompts), "--plain-grpo", "--max-steps", "1",
                                      "--profile", "test", "--config", config_file()])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 steps, R_t on at step None" in result.output and "registered" not in result.output
    missing = CliRunner().invoke(app, ["train", "grpo", "--data", str(prompts) + ".nope", "--profile", "test"])
    assert missing.exit_code == 2 and "not found" in missing.output
