"""The trainer with two processes (gloo on CPU, accelerate/DDP): 3 prompts x K = 2 over 2 x 3 rows, so the
middle prompt's group straddles the ranks and each rank samples groups of 1 and 2 completions.

Every rank must see the same global metrics, rebuild the same whole groups, keep only its own rows'
advantages, and end with the same weights (DDP averaged the gradients through the wrapped log-prob
forward; local batches differ, so unsynchronised ranks would drift apart).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

pytestmark = pytest.mark.slow  # two interpreters importing transformers: ~30-60 s on 2 busy cores


def _worker(rank: int, port: int, tmp: str, cfg_json: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        from safetensors.torch import save_file
        from test_grpo_trainer import PositionScorer, write_clips

        from emotionthinker.config import Config
        from models import grpo_trainer as T
        from models.backbone import AudioLM
        from models.grpo_data import GrpoDataset

        cfg = Config.model_validate_json(cfg_json)
        prompts = write_clips(Path(tmp) / f"audio{rank}", 3)
        lm = AudioLM.from_source(cfg.models.policy_source, cfg)
        accelerator = T.make_accelerator(cfg, lm)
        assert accelerator.num_processes == 2 and accelerator.process_index == rank
        trainer = T.GrpoPtrTrainer(cfg, lm, GrpoDataset(prompts, cfg), Path(tmp) / "out", scorer=PositionScorer(),
                                   accelerator=accelerator)  # fmt: skip
        buckets = trainer._local_buckets(1)
        history = []
        for step in (1, 2):
            metrics, rows = trainer.step(step)
            history.append({k: v for k, v in metrics.items() if not k.startswith("time/")} | {"rows": rows})
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps({
            "buckets": [(b.k, b.group_ids) for b in buckets], "history": history}, default=str))  # fmt: skip
        save_file({k: v.contiguous() for k, v in lm.model.state_dict().items()}, str(Path(tmp) / f"rank{rank}.safetensors"))
        accelerator.wait_for_everyone()
    except BaseException:
        (Path(tmp) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_processes_share_groups_metrics_and_weights(cfg, tmp_path):
    from safetensors.torch import load_file

    g = cfg.grpo.model_copy(update={"per_device_train_batch_size": 3, "num_generations": 2, "max_completion_length": 6,
                                    "no_progressive": True, "learning_rate": 1e-3})  # fmt: skip
    c = cfg.model_copy(update={"grpo": g})
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path), c.model_dump_json()), nprocs=2, join=True,
                       start_method="spawn")  # fmt: skip
    errors = sorted(tmp_path.glob("*.error"))
    assert not errors, errors[0].read_text()
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # Rank 0 holds prompt 0 twice and prompt 1 once; rank 1 prompt 1 once and prompt 2 twice.
    assert r0["buckets"] == [[1, [1]], [2, [0]]] and r1["buckets"] == [[1, [1]], [2, [2]]]
    for a, b in zip(r0["history"], r1["history"]):
        for key in ("reward", "accuracy", "rewards/reasoning/mean", "tau/mean", "kl", "loss", "completions/mean_length"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
        assert a["rows"] == b["rows"]  # the same global view of all six completions
        assert len(a["rows"]) == 6 and len({r["prompt_id"] for r in a["rows"]}) == 3
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_run_under_torchrun_trains_like_the_plain_run(zero, cfg, tmp_path):
    """The paper profile's path (accelerate's DeepSpeedPlugin, ZeRO-2/3, DeepSpeed AdamW with torch_adam, gloo),
    one process: the same start, prompts and seeds give the same completions, rewards and weights."""
    from safetensors import safe_open
    from test_grpo_trainer import write_clips

    from models import grpo_trainer as T
    from models.backbone import AudioLM

    base = str(AudioLM.from_source(cfg.models.policy_source, cfg).save(tmp_path / "base"))
    g = {"plain_grpo": True, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6,
         "max_steps": 2, "save_steps": 1, "learning_rate": 1e-3}  # fmt: skip
    prompts = write_clips(tmp_path / "audio", 4)
    plain_cfg = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update=g)})
    plain = T.run_grpo(plain_cfg, prompts, tmp_path / "plain", policy=base)
    ds_cfg = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={**g, "deepspeed": zero})})
    assert T.needs_launcher(ds_cfg)
    ds = T.run_grpo(ds_cfg, prompts, tmp_path / zero, policy=base, timeout_s=400)

    assert ds.global_step == plain.global_step == 2 and (tmp_path / zero / "checkpoint-2").is_dir()
    # DeepSpeed really ran: its engine saved the state (accelerate's plain format would be model.safetensors).
    saved = {p.name for p in (tmp_path / zero / "checkpoint-2").iterdir()}
    assert "pytorch_model" in saved and "model.safetensors" not in saved, saved
    assert ds.deepspeed_stage == int(zero[-1]) and plain.deepspeed_stage is None
    assert "Saving DeepSpeed Model and Optimizer" in (tmp_path / zero / T.LAUNCH_LOG).read_text()
    for a, b in zip(plain.history, ds.history):
        assert a["completions/mean_length"] == b["completions/mean_length"]
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6) and a["kl"] == pytest.approx(b["kl"], abs=1e-5)
    with safe_open(Path(ds.model_dir) / "model.safetensors", "pt") as x, \
            safe_open(Path(plain.model_dir) / "model.safetensors", "pt") as y:  # fmt: skip
        assert set(x.keys()) == set(y.keys())
        assert max((x.get_tensor(k) - y.get_tensor(k)).abs().max().item() for k in x.keys()) < 1e-5
