"""EmotionCoT records: the annotated input contract, the output record and the training target.

Output keeps the released EmotionCoT field names (audio_path, transcription,
emotion, annotations) so released data loads through the same code, and adds
reasoning, target, provenance, id, speaker and split.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emotionthinker.cot import lexicon as lx
from emotionthinker.labels import LABELS, normalize_label

# 'unknown': the annotator could not rank the clip (e.g. no voiced frame in whispered speech).
Level = Literal["low", "normal", "high", "unknown"]
Speed = Literal["slow", "normal", "fast", "unknown"]
Intonation = Literal["rising", "falling", "rising-falling", "falling-rising", "flat", "expressive", "uncertain", "too_short"]
AgeLevel = Literal["Child", "Teenager", "Young Adult", "Middle-aged", "Elderly", "unknown"]


class Annotations(BaseModel):
    """The released annotation block; values are closed vocabularies."""

    model_config = ConfigDict(extra="allow")

    pitch_level: Level
    energy_level: Level
    speed_level: Speed
    stressed_words: list[str] = Field(default_factory=list)
    intonation: Intonation
    gender: Literal["Male", "Female"]
    age_level: AgeLevel = "unknown"


class AnnotatedRecord(BaseModel):
    """What the CoT stage accepts: a manifest record plus annotations (issue 3's contract)."""

    model_config = ConfigDict(extra="allow")

    id: str
    audio_path: str
    emotion: str
    transcription: str | None = None
    speaker: str = "unknown"
    split: str = "train"
    annotations: Annotations

    @field_validator("emotion")
    @classmethod
    def _label(cls, v: str) -> str:
        norm = normalize_label(v)
        if norm is None:
            raise ValueError(f"emotion {v!r} is not one of the nine labels")
        return norm


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    writer: Literal["offline-composer", "openai-compatible"]
    model: str
    prompt_version: str
    base_url_host: str | None = None


class EmotionCotRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    audio_path: str
    transcription: str | None
    emotion: str
    annotations: dict[str, Any]
    reasoning: str
    target: str
    provenance: Provenance
    speaker: str
    split: Literal["train", "validation", "test"]

    @field_validator("emotion")
    @classmethod
    def _label(cls, v: str) -> str:
        if v not in LABELS:
            raise ValueError(f"emotion {v!r} is not one of the nine labels")
        return v


class InvalidRecordError(ValueError):
    """An input record does not meet the annotated-record contract; ``reason`` says why."""

    reason = "invalid_record"


def validate_annotated(raw: dict[str, Any]) -> dict[str, Any]:
    """Return the record with normalised emotion, or raise InvalidRecordError listing every problem."""
    try:
        rec = AnnotatedRecord.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRecordError(problems) from None
    out = dict(raw)
    out["emotion"] = rec.emotion
    out["annotations"] = rec.annotations.model_dump()
    return out


def make_target(reasoning: str, label: str) -> str:
    """The training target the released checkpoint emits."""
    return f"<think>{reasoning.strip()}</think><answer>{label}</answer>"


_TARGET_RE = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.S)


def parse_target(text: str) -> tuple[str, str] | None:
    """(reasoning, answer) when ``text`` is exactly think+answer, else None."""
    m = _TARGET_RE.match(text or "")
    return (m.group(1).strip(), m.group(2).strip()) if m else None


def _speaker_unit(speaker: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:speaker:{speaker}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def speaker_splits(records: list[dict[str, Any]], validation_fraction: float, seed: int = 0) -> dict[str, str]:
    """speaker -> 'train' | 'validation' | 'test'.

    Each speaker falls on one side by a hash of its name, so the assignment of a
    speaker does not move when other speakers are added. With two or more
    trainable speakers and a positive fraction, at least one goes to validation
    and at least one stays in train. Speakers the manifest already put in
    'test' stay there: a test speaker never appears in training.
    """
    test = {r.get("speaker", "unknown") for r in records if r.get("split") == "test"}
    speakers = sorted({r.get("speaker", "unknown") for r in records} - test)
    out = {s: "test" for s in test}
    units = {s: _speaker_unit(s, seed) for s in speakers}
    for s in speakers:
        out[s] = "validation" if units[s] < validation_fraction else "train"
    assigned = [s for s in speakers if out[s] == "validation"]
    if validation_fraction > 0 and len(speakers) >= 2:
        if not assigned:
            out[min(speakers, key=units.__getitem__)] = "validation"
        elif len(assigned) == len(speakers):
            out[max(speakers, key=units.__getitem__)] = "train"
    return out


def build_cot_record(
    annotated: dict[str, Any], reasoning: str, provenance: dict[str, Any], split: str
) -> dict[str, Any]:
    """Output record: input fields kept, released names first, plus reasoning/target/provenance."""
    rec = {
        "id": annotated["id"],
        "audio_path": annotated["audio_path"],
        "transcription": annotated.get("transcription"),
        "emotion": annotated["emotion"],
        "annotations": annotated["annotations"],
        "reasoning": reasoning,
        "target": make_target(reasoning, annotated["emotion"]),
        "provenance": provenance,
        "speaker": annotated.get("speaker", "unknown"),
        "split": split,
    }
    for k, v in annotated.items():
        if k not in rec:
            rec[k] = v
    EmotionCotRecord.model_validate(rec)
    return rec


def from_released(row: dict[str, Any], index: int, reasoning_key: str = "reasoning") -> dict[str, Any]:
    """Load one upstream EmotionCoT row (audio_path/transcription/emotion/annotations[/reasoning]).

    Upstream capitalises some emotions (e.g. 'Contempt/Disgust'); they are normalised to the nine labels.
    """
    label = normalize_label(str(row.get("emotion", "")))
    if label is None:
        raise InvalidRecordError(f"emotion {row.get('emotion')!r} is not one of the nine labels")
    ann = dict(row.get("annotations") or {})
    for key in ("pitch_level", "energy_level", "speed_level", "intonation"):
        if isinstance(ann.get(key), str):
            ann[key] = ann[key].strip().lower()
    if ann.get("intonation") not in lx.INTONATIONS and ann.get("intonation") not in lx.UNDETERMINED_INTONATION:
        ann["intonation"] = "uncertain"
    out = {
        "id": row.get("id") or f"emotioncot-{index:06d}",
        "audio_path": row["audio_path"],
        "transcription": row.get("transcription"),
        "emotion": label,
        "annotations": ann,
        "speaker": row.get("speaker", "unknown"),
        "split": row.get("split", "train"),
    }
    if row.get(reasoning_key):
        out["reasoning"] = row[reasoning_key]
        out["target"] = make_target(row[reasoning_key], label)
    return out
