"""TESS, Toronto emotional speech set (Dupuis & Pichora-Fuller 2010).

``<SPK>_<emotion>/<SPK>_<word>_<emotion>.wav`` for two female speakers, OAF
(older, 64) and YAF (younger, 26), each saying "Say the word <word>" for 200
words in seven emotions; pleasant surprise is spelt ``ps`` in file names and
``pleasant_surprise(d)`` in folder names. Folder names win for the speaker
(a few files are named ``OA_...``).

With only two speakers a speaker-independent split is impossible; the split is
by target word (deterministic hash, ~80/10/10), so no word appears in two splits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import (
    Adapter, Candidate, Entry, Skipped, bad_name, hash_split, relpath, walk_files,
)

EMOTIONS: dict[str, tuple[str, str]] = {  # spelling -> (source label, label)
    "angry": ("angry", "angry"), "disgust": ("disgust", "contempt or disgust"), "fear": ("fear", "fear"),
    "happy": ("happy", "happy"), "neutral": ("neutral", "neutral"), "sad": ("sad", "sad"),
    "ps": ("pleasant_surprise", "surprise"), "pleasant_surprise": ("pleasant_surprise", "surprise"),
    "pleasant_surprised": ("pleasant_surprise", "surprise"),
}
SPEAKER_AGE = {"OAF": 64, "YAF": 26}
FOLDER = re.compile(r"^(OAF|YAF)_", re.IGNORECASE)


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    for path in walk_files(root, {".wav"}):
        if path.name.startswith("."):
            yield Skipped("hidden", relpath(path, root))
            continue
        parts = path.stem.split("_")
        folder = FOLDER.match(path.parent.name)
        speaker = folder.group(1).upper() if folder else parts[0].upper()
        emotion_key = "_".join(parts[2:]).lower()
        if len(parts) < 3 or speaker not in SPEAKER_AGE or emotion_key not in EMOTIONS:
            yield bad_name(path, root, "expected <OAF|YAF>_<word>_<emotion>.wav with emotion one of "
                           + ", ".join(sorted(EMOTIONS)))
            continue
        word = parts[1].lower()
        source, label = EMOTIONS[emotion_key]
        yield Candidate(
            rel_path=relpath(path, root),
            audio_path=path,
            source_label=source,
            emotion=label,
            split=hash_split(f"tess:{word}"),
            speaker=f"tess-{speaker}",
            gender="female",
            transcription=f"Say the word {word}.",
            extra={"word": word, "speaker_age": SPEAKER_AGE[speaker]},
        )


ADAPTER = Adapter(
    name="tess",
    layout="<OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<emotion>.wav",
    splits="by target word (sha1 hash, ~80/10/10); both speakers in every split",
    scan=scan,
)
