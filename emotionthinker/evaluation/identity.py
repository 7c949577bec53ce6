"""Which model an evaluation scored: label, registry name and version, and its Table-4 variant.

Evaluation runs are tagged with these so promotion (emotionthinker/promotion.py) finds the run of a
registered version and the tables group runs by model and variant.

Variants (the rows of the paper's Table 4, in its order):
    backbone            an untrained assembled/pretrained backbone (packaged:tiny-base, a hub id)
    base                EmotionThinker-Base: SFT stage I only (prosody corpus)
    sft                 + stage II (cold-start CoT)
    grpo                GRPO with format and outcome rewards only (grpo.plain_grpo)
    ptr_untrained_rm    GRPO-PTR with the untrained base as reward model (grpo.untrained_rm)
    ptr_no_trust        GRPO-PTR without the trust weight (grpo.no_trust_weight)
    ptr_no_progressive  GRPO-PTR with R_t from the first step (grpo.no_progressive)
    grpo_ptr            full GRPO-PTR
A registered version's variant is read from its tags and its training run's parameters (the flags
above, and the SFT `stages`); an explicit variant always wins.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from emotionthinker.config import Config
from models.sources import ModelSource, parse_source

VARIANTS: tuple[str, ...] = (
    "backbone", "base", "sft", "grpo", "ptr_untrained_rm", "ptr_no_trust", "ptr_no_progressive", "grpo_ptr",
)  # fmt: skip
# Flag -> variant, in the order they are checked (plain GRPO has no R_t at all, so it wins).
_GRPO_FLAGS: tuple[tuple[str, str], ...] = (
    ("plain_grpo", "grpo"), ("untrained_rm", "ptr_untrained_rm"),
    ("no_trust_weight", "ptr_no_trust"), ("no_progressive", "ptr_no_progressive"),
)  # fmt: skip


@dataclass
class ModelInfo:
    source: str
    label: str  # how tables name it
    kind: str  # hub | packaged | registry | random | path | linear_probe
    model_name: str = ""  # registry name (or the source for unregistered models)
    model_version: str = ""  # registry version number; "" when unregistered
    run_id: str = ""  # the training run of a registered version
    variant: str = ""
    identity: str = ""  # what makes two evaluations of "the same model" (resume key)
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def variant_from_flags(values: Mapping[str, Any]) -> str | None:
    """Variant from GRPO ablation flags under any prefix ('grpo.plain_grpo', 'plain_grpo', ...)."""
    flags = {key.rsplit(".", 1)[-1]: value for key, value in values.items()}
    if not any(name in flags for name, _ in _GRPO_FLAGS):
        return None
    for name, variant in _GRPO_FLAGS:
        if _truthy(flags.get(name, False)):
            return variant
    return "grpo_ptr"


def variant_for(model_name: str, values: Mapping[str, Any]) -> str:
    """Variant of a registered version from its registered name, tags and training-run params."""
    if "variant" in values and values["variant"] in VARIANTS:
        return str(values["variant"])
    if model_name.endswith("-policy"):
        return variant_from_flags(values) or "grpo_ptr"
    if model_name.endswith("-base"):
        stages = str(values.get("stages", values.get("sft.stages", "")))
        return "base" if stages and "stage2" not in stages else "sft"
    return ""


def _path_identity(folder: Path) -> str:
    """Weights file names, sizes and mtimes: changes when the checkpoint is rewritten."""
    parts = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.glob("*.safetensors"))
    return hashlib.sha1(json.dumps([str(folder.resolve()), parts]).encode()).hexdigest()[:16]


def describe_model(source: str, cfg: Config, variant: str | None = None) -> ModelInfo:
    """Resolve a model source to its identity; registry sources are looked up (name, version, run)."""
    if variant and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    src = parse_source(source) if isinstance(source, str) else source
    info = ModelInfo(source=str(src), label=str(src), kind=src.kind, model_name=str(src), identity=str(src))
    if src.kind == "registry":
        _describe_registered(src, cfg, info)
    elif src.kind == "path" and src.path.is_dir():
        info.identity = f"{src}#{_path_identity(src.path)}"
    elif src.kind in ("packaged", "hub"):
        info.variant = "backbone"
    elif src.kind == "random":
        info.variant = "backbone"
        info.identity = f"{src}#seed{cfg.models.seed}"
    if variant:
        info.variant = variant
    return info


def _describe_registered(src: ModelSource, cfg: Config, info: ModelInfo) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from emotionthinker.registry import lookup_model_version

    mv = lookup_model_version(src, cfg)  # RegistryLookupError when nothing is registered under it
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    info.model_name, info.model_version, info.run_id = src.name, str(mv.version), mv.run_id or ""
    info.label = f"{src.name} v{mv.version}"
    # Version numbers restart in every MLflow store: the run that logged the weights (else their source) tells
    # two stores' "version 1" apart, so saved answers of one are never reused for the other.
    info.identity = f"registry:{src.name}/{mv.version}#{mv.run_id or mv.source}"
    values: dict[str, Any] = dict(mv.tags or {})
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            values = {**run.data.params, **run.data.tags, **values}
        except MlflowException:
            pass
    info.tags = {k: str(v) for k, v in (mv.tags or {}).items()}
    info.variant = variant_for(src.name, values)
