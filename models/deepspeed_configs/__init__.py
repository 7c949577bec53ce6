"""DeepSpeed ZeRO configs (zero2.json, zero3.json) and the loader that resolves their "auto" values.

The JSON files use transformers' "auto" convention. `resolve_deepspeed_config` fills every "auto" from
the same values the `TrainingArguments` get (transformers' own rules), so the Trainer's consistency
check passes and the config logged to MLflow is exactly the one that ran. On CPU (tests, tiny runs)
DeepSpeed's fused AdamW, a CUDA op, is swapped for torch's (`torch_adam`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent
PACKAGED = ("zero2", "zero3")
AUTO = "auto"
# Filled from the LM hidden size; left "auto" for transformers when the caller does not know it yet
# (with ZeRO-3 the model loads after the TrainingArguments, which take the config).
MODEL_DEPENDENT = (
    "zero_optimization.reduce_bucket_size",
    "zero_optimization.stage3_prefetch_bucket_size",
    "zero_optimization.stage3_param_persistence_threshold",
)
# TrainingArguments defaults for the optimizer values the JSON leaves to "auto".
ADAM_DEFAULTS = {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}


class DeepSpeedConfigError(ValueError):
    """A DeepSpeed config is missing, not JSON, or leaves a value we cannot resolve."""


def deepspeed_config_path(name_or_path: str | Path) -> Path:
    """`zero2` / `zero3` name the packaged files; anything else is a path to a JSON file."""
    text = str(name_or_path)
    path = CONFIG_DIR / f"{text}.json" if text in PACKAGED else Path(text).expanduser()
    if not path.is_file():
        raise DeepSpeedConfigError(f"DeepSpeed config {text!r}: no such file {path} (packaged: {', '.join(PACKAGED)})")
    return path


def load_deepspeed_template(name_or_path: str | Path) -> dict[str, Any]:
    path = deepspeed_config_path(name_or_path)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DeepSpeedConfigError(f"DeepSpeed config {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or "zero_optimization" not in config:
        raise DeepSpeedConfigError(f"DeepSpeed config {path} has no zero_optimization section")
    return config


def zero_stage(config: Mapping[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def _set_auto(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    if node.get(leaf) == AUTO:
        node[leaf] = value


def _remaining_auto(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _remaining_auto(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if node == AUTO else []


def resolve_deepspeed_config(
    name_or_path: str | Path,
    args: Mapping[str, Any],
    *,
    world_size: int,
    hidden_size: int | None,
    on_cpu: bool,
    num_training_steps: int | None = None,
    warmup_steps: int | None = None,
) -> dict[str, Any]:
    """The config with every "auto" filled; `args` are TrainingArguments keyword values.

    Uses transformers' formulas (train_batch_size = world x micro x accumulation; bucket sizes from
    the LM hidden size), so the Trainer finds nothing to change or reject. Without `hidden_size` the
    MODEL_DEPENDENT keys stay "auto" and transformers fills them from the model at Trainer start.
    """
    config = copy.deepcopy(load_deepspeed_template(name_or_path))
    a = {**ADAM_DEFAULTS, **args}
    micro, accumulation = int(a["per_device_train_batch_size"]), int(a.get("gradient_accumulation_steps", 1))
    values: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": world_size * micro * accumulation,
        "gradient_clipping": float(a.get("max_grad_norm", 1.0)),
        "optimizer.params.lr": float(a["learning_rate"]),
        "optimizer.params.betas": [float(a["adam_beta1"]), float(a["adam_beta2"])],
        "optimizer.params.eps": float(a["adam_epsilon"]),
        "optimizer.params.weight_decay": float(a.get("weight_decay", 0.0)),
        "fp16.enabled": bool(a.get("fp16", False)),
        "bf16.enabled": bool(a.get("bf16", False)),
        "scheduler.params.warmup_min_lr": 0,
        "scheduler.params.warmup_max_lr": float(a["learning_rate"]),
    }
    if hidden_size is not None:
        values["zero_optimization.reduce_bucket_size"] = hidden_size * hidden_size
        values["zero_optimization.stage3_prefetch_bucket_size"] = int(0.9 * hidden_size * hidden_size)
        values["zero_optimization.stage3_param_persistence_threshold"] = 10 * hidden_size
    if num_training_steps is not None:
        values["scheduler.params.total_num_steps"] = num_training_steps
    if warmup_steps is not None:
        values["scheduler.params.warmup_num_steps"] = max(1, warmup_steps)
    for dotted, value in values.items():
        _set_auto(config, dotted, value)
    left = [k for k in _remaining_auto(config) if not (k in MODEL_DEPENDENT and hidden_size is None)]
    if left:
        raise DeepSpeedConfigError(f"DeepSpeed config {name_or_path}: cannot resolve 'auto' for {', '.join(left)}")
    if on_cpu:
        optimizer = config.get("optimizer")
        if optimizer and optimizer.get("type", "").lower() in ("adam", "adamw"):
            optimizer.setdefault("params", {})["torch_adam"] = True  # FusedAdam is CUDA-only
    return config


def skip_shm_comm_compile(world_size: int) -> bool:
    """With one CPU process, keep DeepSpeed from JIT-compiling its shared-memory all-reduce op.

    DeepSpeed's CPU backend compiles that op (~75 s of g++ on 2 cores) the first time any run starts,
    even a single-process one, where there is nothing to all-reduce. Marking it incompatible makes
    DeepSpeed use plain torch.distributed (gloo), which it does anyway on platforms without the op.
    Multi-process CPU runs keep the op (it pays off there). Returns whether the op was turned off.
    """
    import torch

    if world_size > 1 or torch.cuda.is_available():
        return False
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None:
        return False
    # DeepSpeed keeps one probed dict of compatible ops and reads it when its comm backend starts.
    deepspeed.ops.__compatible_ops__[builder.NAME] = False
    return True
