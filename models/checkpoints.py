"""Where a training stage keeps its checkpoints and final model, and how a rerun resumes or reuses them.

A stage's folder is named by a fingerprint of everything that determines its result (stage settings,
starting model, data hash, profile): a rerun with the same inputs resumes from the last Trainer
checkpoint or reuses the finished model, and a changed input starts a fresh folder instead of
resuming someone else's optimizer state.

    <root>/<stage>-<fingerprint>/
        checkpoint-<step>/    Trainer checkpoints (weights in safetensors), the last `save_total_limit` kept
                              while training; none once an SFT or reward-model stage is done (see prune_checkpoints)
        adapter/              stage II: the trained LoRA adapter (safetensors)
        final/                the finished model (AudioLM save) + DONE_FILE, written last
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from emotionthinker.locks import output_lock
from emotionthinker.records import write_text_atomic

DONE_FILE = "sft_stage.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SPACE_MARGIN = 1.2  # a save also writes RNG and scheduler state and a temporary copy of the trainer state


class CheckpointSpaceError(OSError):
    """A checkpoint would not fit on the disk: raised before writing it, so no torn folder is left behind."""


def fingerprint(payload: dict[str, Any]) -> str:
    """12 hex chars of sha1 over canonical JSON: short enough for a folder name, collisions negligible."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def stage_dir(root: Path, stage: str, fp: str) -> Path:
    return Path(root) / f"{stage}-{fp}"


def stage_lock(folder: Path, error: Callable[[str], Exception] = RuntimeError) -> AbstractContextManager[None]:
    """One process trains into a stage folder at a time; a second one (same settings, so the same folder:
    a hand-started `train` beside the nightly retrain, say) raises `error` at once instead of writing
    checkpoints into the same folder. The lock file sits beside the folder."""
    folder = Path(folder)
    return output_lock(folder.parent / f"{folder.name}.lock", f"training into {folder}",
                       "the finished stage is then reused", error)  # fmt: skip


def is_rank_zero() -> bool:
    """This process writes shared files: rank 0 under torchrun, or a plain (unlaunched) process."""
    return int(os.environ.get("RANK", "0")) == 0


def last_checkpoint(folder: Path) -> Path | None:
    """The Trainer checkpoint with the highest step that holds a trainer state (a complete save)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if p.is_dir() and (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").is_file()
    ]
    return max(done)[1] if done else None


def read_done(folder: Path) -> dict[str, Any] | None:
    """The summary a finished stage wrote into final/, or None when the stage never finished."""
    path = Path(folder) / "final" / DONE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finished_stage(folder: Path) -> dict[str, Any] | None:
    """read_done for reuse: a finished stage's summary, its checkpoints pruned (a stage finished before
    pruning existed keeps them until it is next reused), or None when the stage never finished."""
    done = read_done(folder)
    if done is not None and is_rank_zero():
        prune_checkpoints(folder)
    return done


def write_done(folder: Path, summary: dict[str, Any]) -> Path:
    """Mark the stage finished; written last so a crash never leaves a half model marked done."""
    return write_text_atomic(Path(folder) / "final" / DONE_FILE, json.dumps(summary, indent=2, sort_keys=True, default=str))


def prune_checkpoints(folder: Path, keep: int = 0) -> list[Path]:
    """Delete a finished stage's Trainer checkpoints but the last `keep` complete ones; return the deleted.

    Checkpoints exist so that a killed run resumes. Once a stage is done, an SFT or reward-model rerun
    reuses final/ and a longer run is another folder (max_steps is in the fingerprint), so none is
    needed (keep=0); GRPO keeps its last one, which a longer run continues from (keep=1). In the tiny
    demo that is 3.8 GB of SFT stage-I checkpoints with their Adam states, and 1.3 GB of GRPO's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    steps = {p: int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))}
    found = sorted(steps, key=steps.__getitem__)
    complete = [p for p in found if (p / "trainer_state.json").is_file()]  # as last_checkpoint counts them
    kept = set(complete[-keep:]) if keep else set()
    deleted = [p for p in found if p not in kept]
    for p in deleted:
        shutil.rmtree(p, ignore_errors=True)
    return deleted


def files_sha1(paths: list[Path]) -> str:
    """sha1 over the named files' names and bytes, in the given order (the data version of plain files)."""
    h = hashlib.sha1()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def state_bytes_estimate(model: Any) -> int:
    """Bytes a training checkpoint of `model` takes: its weights and buffers (a peft model: its adapters only,
    which is all peft saves) plus Adam's two fp32 moments of every trainable parameter (what `save_state` and
    the Trainer write, give or take small files)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    saved = trainable if hasattr(model, "peft_config") else [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in saved) + sum(2 * 4 * p.numel() for p in trainable)


def ensure_room_for_checkpoint(stage_path: Path, model: Any) -> None:
    """Refuse a save the disk cannot hold, with what to do about it. A save cut off by a full disk fails after
    the step's work is done and leaves a torn folder; this fails first and names the checkpoint a rerun resumes
    from. The need is the last complete checkpoint's size, or the estimate from the model before the first."""
    stage_path = Path(stage_path)
    previous = last_checkpoint(stage_path)
    needed = int(SPACE_MARGIN * max(state_bytes_estimate(model), folder_bytes(previous) if previous else 0))
    where = next(p for p in (stage_path, *stage_path.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if free < needed:
        raise CheckpointSpaceError(
            f"not enough disk for the next checkpoint in {stage_path}: it needs about {needed / 1e9:.2f} GB and "
            f"{free / 1e9:.2f} GB is free on {where}. Free space (or lower save_total_limit) and rerun: training "
            + (f"resumes from {previous.name}." if previous else "starts again from step 0, nothing was saved yet.")
        )
