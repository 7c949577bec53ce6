"""Berlin Database of Emotional Speech (Burkhardt et al. 2005): ``wav/SSTTTEV.wav``.

Speaker SS, text code TTT, emotion letter E (German initials), version V.
Files directly under the root are accepted too (processed copies ship that way).
Boredom has no counterpart in the nine classes: excluded and counted.

Split by speaker, balanced by gender (EmoDB has no official split; ten
speakers): validation 12 (m) + 14 (f), test 15 (m) + 16 (f), the other six train.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import Adapter, Candidate, Entry, Skipped, bad_name, relpath

SPEAKERS = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
            "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}
SPLITS = {"12": "validation", "14": "validation", "15": "test", "16": "test"}
EMOTIONS: dict[str, tuple[str, str | None]] = {  # letter -> (source label, label)
    "W": ("anger", "angry"),  # Wut
    "L": ("boredom", None),  # Langeweile: no counterpart
    "E": ("disgust", "contempt or disgust"),  # Ekel
    "A": ("fear", "fear"),  # Angst
    "F": ("happiness", "happy"),  # Freude
    "T": ("sadness", "sad"),  # Trauer
    "N": ("neutral", "neutral"),
}
TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    folder = root / "wav" if (root / "wav").is_dir() else root
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav"):
        if path.name.startswith("."):
            yield Skipped("hidden", relpath(path, root))
            continue
        m = NAME.match(path.stem)
        if not m:
            yield bad_name(path, root, "expected SSTTTEV.wav (speaker, text code, emotion letter, version)")
            continue
        speaker, text, letter, version = m.groups()
        problems = [f"unknown speaker {speaker}"] * (speaker not in SPEAKERS)
        problems += [f"unknown text code {text}"] * (text not in TEXTS)
        problems += [f"unknown emotion letter {letter}"] * (letter not in EMOTIONS)
        if problems:
            yield bad_name(path, root, "; ".join(problems))
            continue
        source, label = EMOTIONS[letter]
        yield Candidate(
            rel_path=relpath(path, root),
            audio_path=path,
            source_label=source,
            emotion=label,
            split=SPLITS.get(speaker, "train"),
            speaker=f"emodb-{speaker}",
            gender=SPEAKERS[speaker],
            transcription=TEXTS[text],
            extra={"language": "de", "text_code": text, "version": version},
        )


ADAPTER = Adapter(
    name="emodb",
    layout="wav/SSTTTEV.wav (or SSTTTEV.wav directly under the root)",
    splits="by speaker: validation 12+14, test 15+16, train the rest",
    scan=scan,
)
