"""The retrain chain's plain logic: stage order, cache keys, cache validity, the closing summary.

A stage's cache key hashes what decides its output: the stage name, its config sections, the code
version (git commit), its own inputs (file contents where it reads files) and the keys of the stages
it depends on, so a change anywhere upstream reruns everything downstream and nothing else.
A cached result is used only while what it points at is still there (output files, MLflow run).
One retrain runs in a workspace at a time (`workspace_lock`): two would train into the same stage
folders and add the same data versions at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config, project_path
from emotionthinker.locks import LockTimeout, file_lock

class RetrainError(ValueError):
    """The retrain flow cannot start as asked (e.g. a corpus without its folder)."""


class RetrainBusy(RetrainError):
    """Another retrain holds the workspace (a scheduled run and a manual one, say)."""


def lock_path(cfg: Config) -> Path:
    return cfg.workspace / "locks" / "retrain.lock"


@contextmanager
def workspace_lock(cfg: Config) -> Iterator[float]:
    """Hold the workspace's retrain lock for the whole chain (yields the seconds waited); wait at most
    `retrain.lock_timeout_s` (0: refuse at once) for a retrain already running here."""
    def busy(exc: LockTimeout) -> RetrainBusy:
        waited = f", still after retrain.lock_timeout_s={exc.timeout_s:g} s" if exc.timeout_s else ""
        return RetrainBusy(
            f"another retrain is running in this workspace ({cfg.workspace}): {exc.holder}{waited}. Wait for it "
            "to finish (its finished stages are then cached here), set retrain.lock_timeout_s to wait for it, "
            "or give this run its own paths.workspace and paths.data"
        )

    with file_lock(lock_path(cfg), cfg.retrain.lock_timeout_s, poll_s=1.0, refuse=busy) as waited:
        yield waited


def corpus_root(cfg: Config, corpus: str, root: str | None) -> str | None:
    """The corpus folder a retrain reads: the flow's ``root``, else ``retrain.root``; None for the demo
    corpus, which the flow synthesises. A relative folder is taken against the project root, like every
    path in the config (the command line passes it absolute): a scheduled run starts in any folder.
    Checked before any stage runs, so a typo costs one line, not a failed ingest."""
    given = root or cfg.retrain.root
    if not given:
        if corpus == "demo":
            return None
        raise RetrainError(f"retrain on corpus {corpus!r} needs its folder: pass root or set retrain.root")
    folder = project_path(given)
    if not folder.is_dir():
        rule = "" if Path(given).expanduser().is_absolute() else ", a relative folder is taken against the project root"
        raise RetrainError(f"{corpus} corpus folder not found: {folder} ({'root' if root else 'retrain.root'} "
                           f"{given!r}{rule})")  # fmt: skip
    return str(folder)


# Order of the chain; each stage's upstream stages and the config sections that shape its output.
STAGES: tuple[str, ...] = (
    "demo_corpus", "ingest", "annotate", "cot", "sft_data", "sft", "reward_model", "grpo_ptr", "evaluate",
)  # fmt: skip
UPSTREAM: dict[str, tuple[str, ...]] = {
    "demo_corpus": (),
    "ingest": ("demo_corpus",),
    "annotate": ("ingest",),
    "cot": ("annotate",),
    "sft_data": ("annotate", "cot"),
    "sft": ("sft_data",),
    "reward_model": ("cot",),
    "grpo_ptr": ("cot", "sft", "reward_model"),
    "evaluate": ("ingest", "grpo_ptr"),
}
# A section, or one field of it ("grpo.reasoning_weights").
SECTIONS: dict[str, tuple[str, ...]] = {
    "demo_corpus": ("demo",),
    "ingest": ("audio", "validation"),
    "annotate": ("audio", "validation", "prosody", "asr", "traits"),
    "cot": ("validation", "cot", "rm_data"),
    "sft_data": ("validation", "sft_data", "models"),
    "sft": ("sft", "models"),
    "reward_model": ("rm", "models", "grpo.reasoning_weights"),
    "grpo_ptr": ("grpo", "models", "rm"),
    "evaluate": ("eval", "models", "retrain"),
}
# The metrics the closing summary prints (all of RetrainSummary.metrics() go to the parent run).
HEADLINE_METRICS = (
    "base.cot/format_rate", "base.cot/emotion_accuracy", "base.attribute/accuracy",
    "sft.cot/format_rate", "sft.cot/emotion_accuracy", "sft.attribute/accuracy", "sft.comparative/accuracy",
    "rm.parse_rate", "rm.spearman/reasoning_reward", "grpo.reward_first5", "grpo.reward_last5", "grpo.accuracy_first5",
    "grpo.accuracy_last5", "policy.uar", "policy.weighted_accuracy", "policy.macro_f1", "policy.format_rate",
)  # fmt: skip
# Result keys naming files or folders a later stage (or the user) reads: all must still exist.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "demo_corpus": ("root",),
    "ingest": ("manifest",),
    "annotate": ("annotated",),
    "cot": ("cot", "rm_tuples"),
    "sft_data": ("data_dir",),
    "sft": ("model_dir",),
    "reward_model": ("model_dir",),
    "grpo_ptr": ("model_dir",),
    "evaluate": ("directory",),
}


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _setting(cfg: Config, dotted: str) -> Any:
    from pydantic import BaseModel

    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def content_hash(path: str | Path) -> str:
    """DVC's md5 of a file or folder (what the data version says), or 'missing'."""
    from emotionthinker.versioning import content_md5

    p = Path(path)
    return content_md5(p) if p.exists() else "missing"


def ingest_inputs(corpus: str, root: str | Path) -> dict[str, str]:
    """What decides an ingest beside its config: the adapter, where the clips are (manifests hold their
    paths, in the form they store them) and their content; the same folder read by another adapter
    is another manifest."""
    from emotionthinker.stored_paths import stored_path

    return {"corpus": corpus, "root_path": stored_path(root), "root": content_hash(root)}


def check_eval_split(manifest: str | Path, split: str) -> None:
    """The split the new policy is evaluated and promoted on must hold clips. Checked right after ingest:
    RAVDESS actors 01-02 alone are all 'train' under the by-actor protocol, and the chain used to train for
    a quarter of an hour before its evaluation found no 'test' clip."""
    if split == "all":
        return
    from collections import Counter

    from emotionthinker.records import iter_jsonl

    counts = Counter(str(r.get("split")) for r in iter_jsonl(manifest))
    if not counts.get(split):
        have = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"
        raise RetrainError(f"retrain.eval_split {split!r} has no clips in {manifest} (its splits: {have}), so the "
                           "new policy could be neither evaluated nor promoted; set retrain.eval_split to a split "
                           "it has, or 'all' (which also scores the clips it trained on)")  # fmt: skip


def annotate_inputs(cfg: Config, manifest: str | Path) -> dict[str, str]:
    """Beside the config: the gender model a moved alias resolves to, where a clip has no corpus gender."""
    from emotionthinker.annotate import gender_model_setting
    from emotionthinker.records import iter_jsonl

    return gender_model_setting(cfg, iter_jsonl(manifest))


def stage_key(
    stage: str,
    cfg: Config,
    code_version: str,
    upstream_keys: Mapping[str, str],
    inputs: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of one stage run (see the module docstring)."""
    if stage not in UPSTREAM:
        raise ValueError(f"unknown retrain stage {stage!r}; stages: {', '.join(STAGES)}")
    missing = [u for u in UPSTREAM[stage] if u in STAGES and u not in upstream_keys and u != "demo_corpus"]
    if missing:
        raise ValueError(f"stage {stage} needs the keys of {missing} first")
    return _digest({
        "stage": stage,
        "profile": cfg.profile,
        "paths": cfg.paths.model_dump(mode="json"),
        "config": {s: _setting(cfg, s) for s in SECTIONS[stage]},
        "code": code_version,
        "upstream": {u: upstream_keys.get(u) for u in UPSTREAM[stage]},
        "inputs": dict(inputs or {}),
    })  # fmt: skip


def missing_outputs(stage: str, result: Mapping[str, Any], run_exists=None) -> list[str]:
    """What a cached result points at that is gone: output paths, and its MLflow run when run_exists is given."""
    gone = [f"{k}={result.get(k)}" for k in OUTPUTS[stage] if not result.get(k) or not Path(result[k]).exists()]
    run_id = result.get("run_id")
    if run_exists is not None and run_id and not run_exists(run_id):
        gone.append(f"MLflow run {run_id}")
    return gone


@dataclass
class StageOutcome:
    stage: str
    seconds: float
    cached: bool
    result: dict[str, Any]
    key: str = ""

    def row(self) -> dict[str, Any]:
        return {"stage": self.stage, "seconds": round(self.seconds, 1), "cached": self.cached,
                "mlflow_run": self.result.get("run_id", "")}  # fmt: skip


@dataclass
class RetrainSummary:
    profile: str
    stages: list[StageOutcome]
    promotion: dict[str, Any] | None
    wall_s: float
    run_id: str
    ui_url: str
    data_versions: dict[str, str] = field(default_factory=dict)

    def outcome(self, stage: str) -> StageOutcome | None:
        return next((s for s in self.stages if s.stage == stage), None)

    def metrics(self) -> dict[str, float]:
        """The numbers a reader compares between retrains (also logged on the parent run)."""
        out: dict[str, float] = {}
        if (s := self.outcome("sft")) is not None:
            out |= {f"sft.{k}": v for k, v in s.result.get("eval", {}).items()}
            out |= {f"base.{k}": v for k, v in s.result.get("base_eval", {}).items()}
        if (s := self.outcome("reward_model")) is not None:
            out |= {f"rm.{k}": v for k, v in s.result.get("eval", {}).items()}
        if (s := self.outcome("grpo_ptr")) is not None:
            out |= {f"grpo.{k}": v for k, v in (s.result.get("summary") or {}).items() if isinstance(v, (int, float))}
        if (s := self.outcome("evaluate")) is not None:
            out |= {f"policy.{k}": v for k, v in s.result.get("metrics", {}).items() if isinstance(v, (int, float))}
        return {k: float(v) for k, v in out.items() if v is not None}

    def registered(self) -> list[str]:
        out = []
        for stage in ("sft", "reward_model", "grpo_ptr"):
            s = self.outcome(stage)
            if s is not None and (reg := s.result.get("registered")):
                out.append(f"{reg['name']} v{reg['version']} @{reg['alias']}")
        return out

    def as_text(self) -> str:
        lines = [f"=== EmotionThinker retrain ({self.profile}): done in {self.wall_s:.0f} s ==="]
        lines.append(f"{'stage':<14} {'seconds':>8}  {'cached':<6}  MLflow run")
        for s in self.stages:
            lines.append(f"{s.stage:<14} {s.seconds:>8.1f}  {'yes' if s.cached else 'no':<6}  {s.result.get('run_id', '-')}")
        if self.data_versions:
            lines.append("data versions (DVC md5):")
            lines += [f"  {k}: {v}" for k, v in sorted(self.data_versions.items())]
        metrics = self.metrics()
        if shown := [k for k in HEADLINE_METRICS if k in metrics]:
            lines.append(f"metrics (all {len(metrics)} on the parent run):")
            lines += [f"  {k:<28} {metrics[k]:.4f}" for k in shown]
        if reg := self.registered():
            lines.append("registered: " + "; ".join(reg))
        if self.promotion:
            p = self.promotion
            lines.append(f"promotion: {p.get('decision')} - champion now v{p.get('champion_after') or '-'} "
                         f"({p.get('reason', '')})")  # fmt: skip
        lines.append(f"parent MLflow run {self.run_id}; open the UI: `make ui` -> {self.ui_url}")
        return "\n".join(lines)


def collect_data_versions(results: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in results:
        dv = r.get("data_version")
        if isinstance(dv, Mapping):
            out.update({str(k): str(v) for k, v in dv.items()})
    return out


TRANSIENT_MESSAGES = ("database is locked", "connection reset", "connection refused", "timed out", "temporarily unavailable")


def is_transient(exc: BaseException | None) -> bool:
    """Worth one more try: network and lock trouble, not bad data or a crashed trainer."""
    if exc is None:
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    if name in {"APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError"}:
        return True
    return any(m in str(exc).lower() for m in TRANSIENT_MESSAGES)
