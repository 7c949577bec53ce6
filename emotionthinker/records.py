"""Manifest records and JSONL I/O shared by every stage.

A record is keyed by a stable id so that every stage can resume and never
duplicates work. Stages add fields; they never rename the manifest's fields.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emotionthinker.errors import InputError
from emotionthinker.labels import LABELS

Split = Literal["train", "validation", "test"]
Gender = Literal["male", "female", "unknown"]


def stable_id(corpus: str, relative_path: str) -> str:
    """Id from corpus and path relative to the corpus root, so it survives moving the corpus."""
    digest = hashlib.sha1(f"{corpus}:{relative_path}".encode()).hexdigest()[:12]
    stem = Path(relative_path).stem
    return f"{corpus}-{stem}-{digest}"


class ManifestRecord(BaseModel):
    """One clip of a corpus, mapped into the nine-class label space."""

    model_config = ConfigDict(extra="allow")

    id: str
    audio_path: str  # relative to the project root when the clip is in or beside it (stored_paths.py)
    corpus: str
    split: Split
    speaker: str
    gender: Gender = "unknown"
    emotion: str
    source_label: str
    transcription: str | None = None
    duration_s: float | None = Field(default=None, ge=0)

    @field_validator("emotion")
    @classmethod
    def _in_label_space(cls, v: str) -> str:
        if v not in LABELS:
            raise ValueError(f"emotion {v!r} is not one of the nine labels")
        return v


class QuarantineRecord(BaseModel):
    """A record a stage could not accept, with the reason; nothing is silently dropped."""

    model_config = ConfigDict(extra="allow")

    id: str
    audio_path: str
    stage: str
    reason: str
    error_type: str


def reason_code(reason: str) -> str:
    """The code a reason starts with ("too_short: duration_s=0.1 ..." -> "too_short"): the key of counts."""
    return reason.split(":", 1)[0]


class JsonlError(InputError):
    """A JSON Lines file with a line that is not a JSON object."""


def read_jsonl(path: str | Path, *, torn_tail: bool = False) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, torn_tail=torn_tail))


def iter_jsonl(path: str | Path, *, torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON Lines file (none when it does not exist); a bad line raises JsonlError.

    torn_tail=True is for files the platform streams to: a last line without its newline that does not
    parse is a write cut off by a kill (or still under way in another process) and is skipped. An input
    file is read whole, so a bad record is an error with its line number, never a silently lost record.
    """
    path = Path(path)
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    lines = jsonl_lines(text)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if torn_tail and lineno == len(lines) and not text.endswith("\n"):
                return
            raise JsonlError(f"{path}:{lineno}: not valid JSON ({exc}): {_excerpt(line)}") from exc
        if not isinstance(rec, dict):
            raise JsonlError(f"{path}:{lineno}: a JSON {type(rec).__name__}, expected an object (one record per line): {_excerpt(line)}")
        yield rec


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split at "\n" only. str.splitlines also splits at U+2028, U+0085 and
    other separators that json.dumps(ensure_ascii=False) leaves raw inside strings (a transcription or
    an LLM's reasoning can hold them), which cut a record in two."""
    return text.split("\n")


def read_input_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a stage's input file; a missing or empty one is an InputError, not an empty dataset."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    records = read_jsonl(path)
    if not records:
        raise InputError(f"{path} holds no records")
    return records


def check_ids(records: Sequence[dict[str, Any]], source: str) -> list[str]:
    """The records' ids; a record without one, or an id used twice, is an InputError (resume keys on ids)."""
    ids = [r.get("id") for r in records]
    missing = [n for n, i in enumerate(ids, 1) if not i]
    if missing:
        raise InputError(f"{source}: {len(missing)} records without an id (first: record {missing[0]})")
    dupes = [k for k, n in Counter(ids).items() if n > 1]
    if dupes:
        raise InputError(f"{source}: duplicate ids (first: {dupes[:3]}); ids must be unique to resume safely")
    return ids  # type: ignore[return-value]


def _excerpt(line: str, width: int = 80) -> str:
    line = line.strip()
    return repr(line if len(line) <= width else line[: width - 3] + "...")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small file whole (temp file + rename): a kill mid-write leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any] | BaseModel]) -> int:
    """Write atomically (temp file + rename) so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(_dumps(rec) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def sort_jsonl(path: str | Path, order: Sequence[str], key: str = "id") -> None:
    """Rewrite a streamed file in ``order`` of its keys (others after, by key), so the same inputs give
    the same bytes whatever order parallel workers finished in. The sort is stable: lines of one key
    keep the order they were written in."""
    path = Path(path)
    if not path.exists():
        return
    rank = {k: i for i, k in enumerate(order)}
    records = read_jsonl(path)
    records.sort(key=lambda r: (rank.get(r.get(key), len(rank)), "" if r.get(key) in rank else str(r.get(key))))
    write_jsonl(path, records)


def append_jsonl(path: str | Path, record: dict[str, Any] | BaseModel) -> None:
    """Append one record and flush, for stages that stream results and resume."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(_dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _dumps(rec: dict[str, Any] | BaseModel) -> str:
    if isinstance(rec, BaseModel):
        rec = rec.model_dump(mode="json")
    return json.dumps(rec, ensure_ascii=False, sort_keys=False)


def prepare_resume(path: str | Path, key: str = "id") -> set[str]:
    """Drop a torn trailing line left by a killed writer and return the keys already written."""
    path = Path(path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)
    return {rec[key] for rec in iter_jsonl(path, torn_tail=True) if key in rec}
