"""RAVDESS speech (Livingstone & Russo 2018): ``Actor_NN/MM-VC-EM-IN-ST-RP-AC.wav``.

Seven two-digit fields: modality (03 audio only), vocal channel (01 speech,
02 song), emotion, intensity, statement, repetition, actor (odd male, even
female). Only speech is in scope: song files are skipped and counted.

Split by actor, so no voice is in two splits. RAVDESS has no official split;
the common speaker-independent convention used here is actors 01-20 train,
21-22 validation, 23-24 test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import Adapter, Candidate, Entry, Skipped, bad_name, relpath, walk_files

EMOTIONS: dict[str, tuple[str, str]] = {  # code -> (source label, label)
    "01": ("neutral", "neutral"),
    "02": ("calm", "neutral"),
    "03": ("happy", "happy"),
    "04": ("sad", "sad"),
    "05": ("angry", "angry"),
    "06": ("fearful", "fear"),
    "07": ("disgust", "contempt or disgust"),
    "08": ("surprised", "surprise"),
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def split_for_actor(actor: int) -> str:
    if actor <= 20:
        return "train"
    return "validation" if actor <= 22 else "test"


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    for path in walk_files(root, {".wav"}):
        if path.name.startswith("."):
            yield Skipped("hidden", relpath(path, root))
            continue
        m = NAME.match(path.stem)
        if not m:
            yield bad_name(path, root, "expected MM-VC-EM-IN-ST-RP-AC.wav (seven two-digit fields)")
            continue
        modality, channel, emo, intensity, statement, repetition, actor_code = m.groups()
        if channel == "02":
            yield Skipped("song", relpath(path, root))
            continue
        actor = int(actor_code)
        problems = []
        if modality != "03":
            problems.append(f"modality {modality} is not 03 (audio only)")
        if channel != "01":
            problems.append(f"vocal channel {channel} is not 01/02")
        if emo not in EMOTIONS:
            problems.append(f"emotion code {emo} is not 01-08")
        if intensity not in INTENSITIES or (emo == "01" and intensity != "01"):
            problems.append(f"intensity {intensity} is invalid for emotion {emo}")
        if statement not in STATEMENTS:
            problems.append(f"statement {statement} is not 01/02")
        if repetition not in {"01", "02"}:
            problems.append(f"repetition {repetition} is not 01/02")
        if not 1 <= actor <= 24:
            problems.append(f"actor {actor_code} is not 01-24")
        folder = path.parent.name
        if folder.startswith("Actor_") and folder != f"Actor_{actor_code}":
            problems.append(f"file of actor {actor_code} lies in {folder}")
        if problems:
            yield bad_name(path, root, "; ".join(problems))
            continue
        source, label = EMOTIONS[emo]
        yield Candidate(
            rel_path=relpath(path, root),
            audio_path=path,
            source_label=source,
            emotion=label,
            split=split_for_actor(actor),
            speaker=f"ravdess-{actor_code}",
            gender="male" if actor % 2 else "female",
            transcription=STATEMENTS[statement],
            extra={"intensity": INTENSITIES[intensity], "repetition": int(repetition)},
        )


ADAPTER = Adapter(
    name="ravdess",
    layout="Actor_NN/MM-VC-EM-IN-ST-RP-AC.wav (RAVDESS Audio_Speech_Actors_01-24)",
    splits="by actor: 01-20 train, 21-22 validation, 23-24 test",
    scan=scan,
)
