"""peft LoRA on the language model of an AudioLM, and merging it back for a standalone checkpoint.

Targets are resolved to full module names under the LM (`model.language_model.*` in both families):
the Whisper-style audio encoder has `q_proj`/`k_proj`/`v_proj` too, and a bare name list would put
adapters there as well, which stage II (LM LoRA only) must not do.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

LM_PREFIX = "model.language_model."


class LoraError(ValueError):
    """LoRA cannot be applied as configured (no matching layer, already wrapped, ...)."""


def language_model_targets(model: torch.nn.Module, names: Sequence[str]) -> list[str]:
    """Full names of the Linear layers inside the language model whose last name part is in `names`."""
    wanted = set(names)
    found = [
        name
        for name, module in model.named_modules()
        if name.startswith(LM_PREFIX) and isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in wanted
    ]
    if not found:
        raise LoraError(f"no Linear layer named {sorted(wanted)} under {LM_PREFIX!r}")
    missing = wanted - {n.rsplit(".", 1)[-1] for n in found}
    if missing:
        raise LoraError(f"LoRA target(s) {sorted(missing)} not found in the language model")
    return found


@contextmanager
def _quiet_peft():
    """peft 0.21 asks transformers 5 a deprecated question (is_gradient_checkpointing); nothing for us to change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def apply_lora(lm, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> dict[str, int]:
    """Wrap `lm.model` with LoRA on the LM; only the adapters train. Returns parameter counts."""
    from peft import LoraConfig, get_peft_model

    if is_peft(lm.model):
        raise LoraError("the model already carries adapters; merge them first")
    targets = language_model_targets(lm.model, target_modules)
    # An exact-name regex: peft would otherwise match suffixes, i.e. the audio encoder's layers too.
    pattern = "^(" + "|".join(re.escape(t) for t in targets) + ")$"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    for p in lm.model.parameters():
        p.requires_grad_(False)
    with _quiet_peft():
        lm.model = get_peft_model(lm.model, config)
    return trainable_counts(lm.model) | {"lora_layers": len(targets)}


def merge_lora(lm) -> None:
    """Fold the adapters into the base weights (in place) so `lm.save` writes a plain checkpoint."""
    if not is_peft(lm.model):
        raise LoraError("the model has no LoRA adapters to merge")
    lm.model = lm.model.merge_and_unload()


def merge_adapter_dir(lm, adapter_dir: str | Path) -> None:
    """Load adapters saved by a (DeepSpeed) Trainer onto `lm` (the stage's base) and merge them.

    A ZeRO-3 run holds partitioned weights that cannot be merged in place; its saved adapter
    (safetensors) applied to a freshly loaded base gives the same merged model.
    """
    from peft import PeftModel

    if is_peft(lm.model):
        raise LoraError("the model already carries adapters; load the adapter onto the plain base")
    with _quiet_peft():
        lm.model = PeftModel.from_pretrained(lm.model, str(adapter_dir), is_trainable=False).merge_and_unload()


def numel(p: torch.nn.Parameter) -> int:
    """Elements of a parameter, also when ZeRO-3 holds only a partition of it here (ds_numel)."""
    return int(getattr(p, "ds_numel", p.numel()))


def trainable_counts(model: torch.nn.Module) -> dict[str, int]:
    total = sum(numel(p) for p in model.parameters())
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}
