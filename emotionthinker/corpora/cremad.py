"""CREMA-D (Cao et al. 2014): ``AudioWAV/ActorID_Sentence_Emotion_Level.wav``.

91 actors (1001-1091) read 12 fixed sentences; emotions ANG DIS FEA HAP NEU SAD,
levels LO MD HI XX (unspecified). Genders and ages from ``VideoDemographics.csv``
(ActorID,Age,Sex,Race,Ethnicity) when present, else 'unknown'.
Split by actor (no official split), about 80/10/10 by actor id: 1001-1073 train,
1074-1082 validation, 1083-1091 test.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import (
    Adapter, Candidate, Entry, Skipped, bad_name, normalize_gender, relpath, walk_files,
)

EMOTIONS: dict[str, tuple[str, str]] = {
    "ANG": ("anger", "angry"), "DIS": ("disgust", "contempt or disgust"), "FEA": ("fear", "fear"),
    "HAP": ("happy", "happy"), "NEU": ("neutral", "neutral"), "SAD": ("sad", "sad"),
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def split_for_actor(actor: int) -> str:
    if actor <= 1073:
        return "train"
    return "validation" if actor <= 1082 else "test"


def read_demographics(root: Path) -> dict[str, dict[str, str]]:
    """ActorID -> row of VideoDemographics.csv (root or one folder down); empty when absent."""
    hits = [root / "VideoDemographics.csv", *sorted(root.glob("*/VideoDemographics.csv"))]
    path = next((p for p in hits if p.is_file()), None)
    if path is None:
        return {}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return {row["ActorID"].strip(): row for row in csv.DictReader(fh) if row.get("ActorID")}


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    demographics = read_demographics(root)
    base = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    for path in walk_files(base, {".wav"}):
        if path.name.startswith("."):
            yield Skipped("hidden", relpath(path, root))
            continue
        m = NAME.match(path.stem)
        if not m:
            yield bad_name(path, root, "expected ActorID_Sentence_Emotion_Level.wav, e.g. 1001_DFA_ANG_XX.wav")
            continue
        actor, sentence, emo, level = m.groups()
        problems = [f"unknown sentence code {sentence}"] * (sentence not in SENTENCES)
        problems += [f"unknown emotion code {emo}"] * (emo not in EMOTIONS)
        problems += [f"unknown level {level}"] * (level not in LEVELS)
        if problems:
            yield bad_name(path, root, "; ".join(problems))
            continue
        source, label = EMOTIONS[emo]
        person = demographics.get(actor, {})
        extra = {"intensity": LEVELS[level], "sentence_code": sentence}
        if (person.get("Age") or "").strip().isdigit():
            extra["speaker_age"] = int(person["Age"])
        yield Candidate(
            rel_path=relpath(path, root),
            audio_path=path,
            source_label=source,
            emotion=label,
            split=split_for_actor(int(actor)),
            speaker=f"cremad-{actor}",
            gender=normalize_gender(person.get("Sex")),
            transcription=SENTENCES[sentence],
            extra=extra,
        )


ADAPTER = Adapter(
    name="cremad",
    layout="AudioWAV/ActorID_Sentence_Emotion_Level.wav (+ VideoDemographics.csv)",
    splits="by actor: 1001-1073 train, 1074-1082 validation, 1083-1091 test",
    scan=scan,
)
