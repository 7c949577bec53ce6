"""Pieces every corpus adapter shares: what an adapter yields, and how entries become records.

An adapter only knows its corpus's layout and label scheme. It yields one entry
per file (or metadata row) it finds: a ``Candidate`` to probe, a ``Rejected``
file that is unusable before any audio is read (bad name, missing label,
failed extraction), or a ``Skipped`` file that is deliberately out of scope
(RAVDESS song, hidden files). ``to_record`` turns a candidate into a
ManifestRecord or a QuarantineRecord; nothing found is lost without a count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.audio import AudioError, probe
from emotionthinker.config import Config
from emotionthinker.errors import InputError
from emotionthinker.records import ManifestRecord, QuarantineRecord, stable_id
from emotionthinker.stored_paths import stored_path

STAGE = "manifest"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Extensions libsndfile reads; anything else in an ad-hoc folder is quarantined as unsupported.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"}
)


class CorpusLayoutError(InputError):
    """The root does not look like the corpus's release (missing folders, metadata files, or no files at all)."""


class UnknownCorpusError(InputError):
    """No adapter has this name."""


@dataclass(frozen=True)
class Candidate:
    """A labelled clip that still has to pass the header probe."""

    rel_path: str  # relative to the corpus root, posix; the stable id is derived from it
    audio_path: Path  # absolute (or relative to the cwd); for MELD the extracted wav in the cache
    source_label: str
    emotion: str | None  # one of LABELS, or None when the source label has no counterpart
    split: str
    speaker: str
    gender: str = "unknown"
    transcription: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """A file the adapter found but cannot use; it becomes a QuarantineRecord with this reason."""

    rel_path: str
    audio_path: Path
    reason: str
    error_type: str
    detail: str
    source_label: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A file deliberately out of scope (e.g. RAVDESS song); counted under ``kind``."""

    kind: str
    rel_path: str


Entry = Candidate | Rejected | Skipped
ScanFn = Callable[[Path, Config], Iterable[Entry]]


@dataclass(frozen=True)
class Adapter:
    """A corpus adapter: its name, the release layout it expects, and the function that scans a root."""

    name: str
    layout: str  # one line for error messages and --help: what the root must look like
    splits: str  # the split convention, documented where it is applied
    scan: ScanFn


def relpath(path: Path, root: Path) -> str:
    """Path relative to the corpus root (posix), or the absolute path for files outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def walk_files(root: Path, suffixes: Iterable[str] | None = None) -> Iterator[Path]:
    """Regular files under root in sorted order (deterministic manifests), optionally by suffix (case-insensitive)."""
    wanted = {s.lower() for s in suffixes} if suffixes is not None else None
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if wanted is None or path.suffix.lower() in wanted:
            yield path


def is_hidden(path: Path, root: Path) -> bool:
    """Hidden files and folders (``.DS_Store``, macOS ``._x.wav`` forks) are never audio of the corpus."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def bad_name(path: Path, root: Path, detail: str) -> Rejected:
    return Rejected(relpath(path, root), path, "bad_name", "BadFileName", detail)


def hash_split(key: str, validation: float = 0.1, test: float = 0.1) -> str:
    """Deterministic split from a key (sha1, not Python's salted hash) for corpora without speaker splits."""
    u = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def to_record(corpus: str, entry: Candidate, cfg: Config) -> ManifestRecord | QuarantineRecord:
    """Probe the header (cheap) and build the record; an unusable file becomes a quarantine record."""
    rid = stable_id(corpus, entry.rel_path)
    try:
        info = probe(entry.audio_path, cfg.audio)
    except AudioError as err:
        return QuarantineRecord(
            id=rid,
            audio_path=stored_path(entry.audio_path),
            stage=STAGE,
            reason=err.reason,
            error_type=type(err).__name__,
            corpus=corpus,
            relative_path=entry.rel_path,
            source_label=entry.source_label,
            detail=err.detail,
        )
    # Extra keys never overwrite the manifest's own fields.
    extra = {k: v for k, v in entry.extra.items() if k not in ManifestRecord.model_fields}
    return ManifestRecord(
        id=rid,
        audio_path=stored_path(entry.audio_path),
        corpus=corpus,
        split=entry.split,
        speaker=entry.speaker,
        gender=entry.gender,
        emotion=entry.emotion,
        source_label=entry.source_label,
        transcription=entry.transcription,
        duration_s=round(info.duration_s, 4),
        **extra,
    )


def rejected_record(corpus: str, entry: Rejected) -> QuarantineRecord:
    return QuarantineRecord(
        id=stable_id(corpus, entry.rel_path),
        audio_path=stored_path(entry.audio_path),
        stage=STAGE,
        reason=entry.reason,
        error_type=entry.error_type,
        corpus=corpus,
        relative_path=entry.rel_path,
        source_label=entry.source_label,
        detail=entry.detail,
    )


def normalize_gender(value: Any) -> str:
    """Corpus metadata spells gender many ways; anything not clearly male/female is 'unknown'."""
    if value is None:
        return "unknown"
    key = str(value).strip().lower()
    if key in {"m", "male", "man"}:
        return "male"
    if key in {"f", "female", "woman"}:
        return "female"
    return "unknown"


def normalize_split(value: Any, default: str = "train") -> str | None:
    """Accept the usual spellings of the three splits; None when the value is not a split at all."""
    if value is None or str(value).strip() == "":
        return default
    key = str(value).strip().lower()
    aliases = {"train": "train", "training": "train", "dev": "validation", "valid": "validation",
               "val": "validation", "validation": "validation", "test": "test", "eval": "test"}
    return aliases.get(key)
