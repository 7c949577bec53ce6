"""DeepSpeed ZeRO-3 SFT on CPU through the code path of the `paper` profile: `run_stage` launches torchrun,
the rank runs `train_stage` with the Trainer (deepspeed=<resolved zero3.json>, use_cpu=True, DeepSpeed
AdamW with torch_adam, gloo). Only the process count and the device differ from the paper.

Both runs start from the same saved model: a random model built while ZeRO-3 is active is initialised
through DeepSpeed's gathered path and gets other random weights, which says nothing about training.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from sft_fixtures import shared_sft_dir  # noqa: E402


@pytest.mark.parametrize("stage", ["stage2", pytest.param("stage1", marks=pytest.mark.slow)])
def test_zero3_sft_on_cpu_trains_exactly_like_plain_training(stage, cfg, tmp_path, mlflow_store_template):
    from mlflow import MlflowClient
    from safetensors import safe_open

    from emotionthinker.tracking import start_stage_run
    from models.backbone import AudioLM
    from models.sft import DEEPSPEED_FILE, LAUNCH_LOG, needs_launcher, read_samples, run_stage, sample_file

    store = Path(cfg.tracking_uri.removeprefix("sqlite:///"))
    store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_store_template, store)
    cfg.sft.lora_dropout = 0.0  # dropout masks are drawn differently once DeepSpeed owns the RNG calls
    base = str(AudioLM.from_source(cfg.models.policy_source, cfg).save(tmp_path / "base"))
    samples = read_samples(sample_file(shared_sft_dir(cfg), stage, "train"))[:8]
    plain = run_stage(stage, base, samples, cfg, tmp_path / "plain")

    cfg.sft.deepspeed = "zero3"  # what the paper profile sets
    assert needs_launcher(cfg)
    folder = tmp_path / "zero3"
    with start_stage_run(cfg, f"sft_{stage}", run_name="deepspeed-test") as run:
        result = run_stage(stage, base, samples, cfg, folder, run_id=run.run_id, timeout_s=400)

    assert result.deepspeed_stage == 3 and result.global_step == 2
    # Same start, data, seed and optimizer maths: ZeRO-3 partitioning changes nothing.
    assert [s for s, _ in result.losses] == [1, 2]
    assert [x for _, x in result.losses] == pytest.approx([x for _, x in plain.losses], rel=1e-5)
    with safe_open(Path(result.model_dir) / "model.safetensors", "pt") as a, \
            safe_open(Path(plain.model_dir) / "model.safetensors", "pt") as b:  # fmt: skip
        assert set(a.keys()) == set(b.keys())
        assert max((a.get_tensor(k) - b.get_tensor(k)).abs().max().item() for k in a.keys()) < 1e-6

    ds = json.loads((folder / DEEPSPEED_FILE).read_text())  # as it ran, every "auto" filled
    assert ds["zero_optimization"]["stage"] == 3 and ds["optimizer"]["params"]["torch_adam"] is True
    assert "auto" not in json.dumps(ds)
    log = (folder / LAUNCH_LOG).read_text()
    assert "deepspeed_shm_comm" not in log  # one process: the shared-memory op is neither built nor loaded
    history = MlflowClient(cfg.tracking_uri).get_metric_history(run.run_id, f"{stage}/loss")
    assert [m.step for m in history] == [1, 2]  # logged by the torchrun rank into the caller's run
    AudioLM.load(result.model_dir)  # a plain, loadable model (stage II: adapters merged on rank 0)
    assert not (Path(result.model_dir) / "training_args.bin").exists()
