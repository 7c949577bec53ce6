"""EmotionCoT input format: JSONL lines with at least ``audio_path``, ``transcription``, ``emotion``.

The root is a ``.jsonl`` file or a folder of them; relative audio paths resolve
against the file's folder, which is also what ids are relative to. Emotion
names are normalised (case, synonyms such as 'Contempt/Disgust'); a name with
no counterpart is excluded and counted. Optional speaker, gender, split; every
other key (released ``annotations``, synthesis settings, ...) stays on the
record. A line that is not JSON or lacks audio_path/emotion is quarantined.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.corpora.common import (
    Adapter, Candidate, CorpusLayoutError, Entry, Rejected, normalize_gender, normalize_split, relpath,
)
from emotionthinker.labels import normalize_label
from emotionthinker.records import jsonl_lines

# Keys the manifest computes itself; the source's values are kept under another name or recomputed.
_OWN_KEYS = {"audio_path", "emotion", "transcription", "speaker", "gender", "split", "id", "corpus",
             "source_label", "duration_s"}


def _bad(where: str, file: Path, reason: str, detail: str, source_label: str | None = None) -> Rejected:
    return Rejected(where, file, reason, "BadMetadata" if reason == "bad_metadata" else "MissingLabel",
                    detail, source_label)


def parse_line(line: str, where: str, file: Path, base: Path) -> Entry:
    """One JSONL line -> Candidate (or Rejected with a reason); ``where`` is ``file:line`` for messages."""
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        return _bad(where, file, "bad_metadata", f"{where}: not valid JSON ({exc.msg})")
    if not isinstance(row, dict) or not isinstance(row.get("audio_path"), str) or not row["audio_path"].strip():
        return _bad(where, file, "bad_metadata", f"{where}: no audio_path string")
    given = Path(row["audio_path"]).expanduser()
    if given.is_absolute():
        audio = given
        rel = relpath(audio, base)
    else:  # ids from the path as written (normalised), so they survive moving the file with its clips
        rel = posixpath.normpath(given.as_posix())
        audio = Path(os.path.normpath(base / given))
    raw_label = row.get("emotion")
    if not isinstance(raw_label, str) or not raw_label.strip():
        return _bad(rel, audio, "no_label", f"{where}: no emotion")
    source = raw_label.strip()
    split = normalize_split(row.get("split"))
    if split is None:
        return _bad(rel, audio, "bad_metadata", f"{where}: split {row.get('split')!r} is not train/validation/test",
                    source)
    transcription = row.get("transcription")
    extra = {k: v for k, v in row.items() if k not in _OWN_KEYS}
    if "id" in row:
        extra["source_id"] = row["id"]
    return Candidate(
        rel_path=rel,
        audio_path=audio,
        source_label=source,
        emotion=normalize_label(source),
        split=split,
        speaker=str(row.get("speaker") or "unknown"),
        gender=normalize_gender(row.get("gender")),
        transcription=(transcription.strip() or None) if isinstance(transcription, str) else None,
        extra=extra,
    )


def read_file(path: Path, base: Path) -> Iterator[Entry]:
    lines = jsonl_lines(path.read_text(encoding="utf-8", errors="replace"))
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            yield parse_line(line, f"{relpath(path, base)}:{lineno}", path, base)


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    if root.is_file():
        yield from read_file(root, root.parent)
        return
    files = sorted(p for p in root.glob("*.jsonl") if not p.name.startswith("."))
    if not files:
        raise CorpusLayoutError(f"{root} is neither a .jsonl file nor a folder holding .jsonl files")
    for path in files:
        yield from read_file(path, root)


ADAPTER = Adapter(
    name="jsonl",
    layout="a .jsonl file (or folder of them) with audio_path, transcription, emotion [, speaker, gender, split]",
    splits="from the 'split' key, default train",
    scan=scan,
)
