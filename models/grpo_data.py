"""GRPO-PTR prompts: one per clip, the released emotion question with the clip and its gold label.

Any record file of the platform serves: a manifest, annotated records, EmotionCoT records (fields
`audio_path`, `emotion`, `id`, `split`), or SFT samples (`audio` [path], `meta.emotion`). Relative
audio paths resolve against the file's folder when the clip is there, else against the project root
(how the platform stores them: emotionthinker/stored_paths.py). Records whose label is outside the
label space or whose audio fails the header probe are quarantined with a reason, never dropped silently.

Which prompts a step sees is a pure function of the step number (`step_prompt_indices`): a seeded
permutation per epoch, consumed in order. A resumed run therefore sees exactly the prompts the
interrupted run would have seen, with no sampler state to save.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotionthinker.audio import AudioError, load_audio, probe
from emotionthinker.config import Config
from emotionthinker.errors import InputError
from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT, normalize_label
from emotionthinker.stored_paths import absolute_path, stored_path_from_file


class GrpoDataError(InputError):
    """The prompt file is missing, malformed, or holds no usable prompt."""


@dataclass(frozen=True)
class GrpoPrompt:
    id: str
    audio_path: str
    gold: str  # one of LABELS
    prompt: str = USER_PROMPT
    system: str = SYSTEM_PROMPT

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "audio_path": self.audio_path, "emotion": self.gold, "prompt": self.prompt,
                "system": self.system}  # fmt: skip


def _audio_of(rec: dict[str, Any]) -> str | None:
    audio = rec.get("audio_path", rec.get("audio"))
    if isinstance(audio, list):
        audio = audio[0] if len(audio) == 1 else None
    return audio if isinstance(audio, str) and audio else None


def _label_of(rec: dict[str, Any]) -> Any:
    if "emotion" in rec:
        return rec["emotion"]
    meta = rec.get("meta")
    return meta.get("emotion") if isinstance(meta, dict) else None


def _split_of(rec: dict[str, Any]) -> str | None:
    if "split" in rec:
        return rec["split"]
    meta = rec.get("meta")
    return meta.get("split") if isinstance(meta, dict) else None


def parse_prompt_records(
    records: Sequence[dict[str, Any]], base_dir: Path, splits: Sequence[str] | None
) -> tuple[list[GrpoPrompt], list[dict[str, Any]], int]:
    """(prompts, quarantined [{id, audio_path, reason, detail}], n skipped for their split); no audio I/O.

    The first record of a clip wins: a CoT file may list a clip once per task, SFT files several times.
    """
    prompts, quarantined, skipped = [], [], 0
    seen_audio: set[str] = set()
    for n, rec in enumerate(records):
        if not isinstance(rec, dict):
            quarantined.append({"id": f"line-{n + 1}", "audio_path": "", "reason": "not_a_record", "detail": str(rec)[:80]})
            continue
        split = _split_of(rec)
        if splits is not None and split is not None and split not in splits:
            skipped += 1
            continue
        audio = _audio_of(rec)
        rid = str(rec.get("id") or "")
        if audio is None:
            quarantined.append({"id": rid or f"line-{n + 1}", "audio_path": "", "reason": "no_audio_path",
                                "detail": "expected audio_path (or audio: [path])"})  # fmt: skip
            continue
        path = stored_path_from_file(audio, base_dir)
        rid = rid or hashlib.sha1(path.encode()).hexdigest()[:12]
        label = _label_of(rec)
        gold = normalize_label(label) if isinstance(label, str) else None
        if gold is None:
            quarantined.append({"id": rid, "audio_path": path, "reason": "label_outside_label_space",
                                "detail": f"emotion {label!r}"})  # fmt: skip
            continue
        if path in seen_audio:
            continue
        seen_audio.add(path)
        prompts.append(GrpoPrompt(rid, path, gold))
    return prompts, quarantined, skipped


def check_prompt_audio(prompts: Sequence[GrpoPrompt], cfg: Config) -> tuple[list[GrpoPrompt], list[dict[str, Any]]]:
    ok, quarantined = [], []
    for p in prompts:
        try:
            probe(p.audio_path, cfg.audio)
        except AudioError as exc:
            quarantined.append({"id": p.id, "audio_path": p.audio_path, "reason": exc.reason, "detail": str(exc)})
            continue
        ok.append(p)
    return ok, quarantined


def select_prompts(prompts: Sequence[GrpoPrompt], max_prompts: int, seed: int) -> list[GrpoPrompt]:
    """At most `max_prompts`, drawn round-robin over the labels (seeded), so a small set keeps every class."""
    if not max_prompts or len(prompts) <= max_prompts:
        return list(prompts)
    rng = random.Random(f"grpo-prompts:{seed}")
    by_label: dict[str, list[GrpoPrompt]] = {}
    for p in sorted(prompts, key=lambda p: p.id):
        by_label.setdefault(p.gold, []).append(p)
    for group in by_label.values():
        rng.shuffle(group)
    out: list[GrpoPrompt] = []
    while len(out) < max_prompts:
        for label in sorted(by_label):
            if by_label[label] and len(out) < max_prompts:
                out.append(by_label[label].pop())
    return sorted(out, key=lambda p: p.id)


@dataclass
class GrpoData:
    """The prompt set a run trains on, with what was left out and why."""

    path: Path
    prompts: list[GrpoPrompt]
    quarantined: list[dict[str, Any]]
    skipped_split: int
    data_version: dict[str, str]
    n_usable: int = 0  # usable prompts before grpo.max_prompts picked `prompts` from them

    def counts(self) -> dict[str, Any]:
        return {"prompts": len(self.prompts), "by_label": dict(sorted(Counter(p.gold for p in self.prompts).items())),
                "usable": self.n_usable, "quarantined": len(self.quarantined), "quarantine_by_reason": dict(Counter(q["reason"] for q in self.quarantined)),
                "skipped_split": self.skipped_split}  # fmt: skip


def data_version(path: Path) -> dict[str, str]:
    """sha1 of the prompt file; the DVC md5 as well when the file (or its folder) is DVC-tracked."""
    from emotionthinker.versioning import VersioningError, read_dvc_md5
    from models.checkpoints import files_sha1

    version = {"grpo_prompts_sha1": files_sha1([path])}
    for pointer in (path.with_name(path.name + ".dvc"), path.parent.with_name(path.parent.name + ".dvc")):
        if pointer.is_file():
            try:
                version["grpo_prompts_dvc_md5"] = read_dvc_md5(pointer)
            except (VersioningError, OSError, ValueError):
                pass
            break
    return version


def load_grpo_data(path: str | Path, cfg: Config) -> GrpoData:
    """Prompts of a record file for GRPO-PTR (see the module docstring).

    Raises GrpoDataError when nothing usable remains; the caller applies validation.max_failure_rate.
    """
    from emotionthinker.records import read_jsonl

    path = absolute_path(path)
    if not path.is_file():
        raise GrpoDataError(f"GRPO prompt file not found: {path}")
    try:
        records = read_jsonl(path)
    except ValueError as exc:
        raise GrpoDataError(str(exc)) from None
    prompts, quarantined, skipped = parse_prompt_records(records, path.parent, cfg.grpo.train_splits)
    prompts, bad_audio = check_prompt_audio(prompts, cfg)
    n_usable = len(prompts)
    prompts = select_prompts(prompts, cfg.grpo.max_prompts, cfg.grpo.seed)
    if not prompts:
        raise GrpoDataError(f"{path}: no usable prompt (splits {cfg.grpo.train_splits}; "
                            f"{len(quarantined) + len(bad_audio)} quarantined, {skipped} of other splits)")  # fmt: skip
    return GrpoData(path, prompts, quarantined + bad_audio, skipped, data_version(path), n_usable)


def write_prompts(path: Path, prompts: Sequence[GrpoPrompt]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p.to_record(), ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    return path


def read_prompts(path: Path) -> list[GrpoPrompt]:
    from emotionthinker.records import read_jsonl

    rows = read_jsonl(path)
    return [GrpoPrompt(r["id"], r["audio_path"], r["emotion"], r["prompt"], r["system"]) for r in rows]


class GrpoDataset:
    """Prompts with their audio, decoded on first use and kept in a bounded cache."""

    def __init__(self, prompts: Sequence[GrpoPrompt], cfg: Config, cache_size: int = 256):
        if not prompts:
            raise GrpoDataError("no GRPO prompts")
        self.prompts = list(prompts)
        self.audio_cfg = cfg.audio
        self.seed = cfg.grpo.seed
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.prompts)

    def audio(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        p = self.prompts[i]
        try:
            y = load_audio(p.audio_path, self.audio_cfg)
        except AudioError as exc:
            raise GrpoDataError(f"prompt {p.id}: {exc}") from exc
        self._cache[i] = y
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return y

    def epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(f"grpo-order:{self.seed}:{epoch}").shuffle(order)
        return order

    def step_prompt_indices(self, step: int, n_prompts: int) -> list[int]:
        """Indices of the `n_prompts` prompts of step `step` (1-based): consecutive slices of per-epoch permutations."""
        if step < 1 or n_prompts < 1:
            raise ValueError(f"step and n_prompts must be >= 1, got {step}, {n_prompts}")
        n = len(self.prompts)
        out = []
        for pos in range((step - 1) * n_prompts, step * n_prompts):
            out.append(self.epoch_order(pos // n)[pos % n])
        return out
