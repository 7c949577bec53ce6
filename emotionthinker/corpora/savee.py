"""SAVEE (Jackson & Haq 2014): ``AudioData/{DC,JE,JK,KL}/{a,d,f,h,n,sa,su}NN.wav``.

Four male speakers; the flat ``DC_a01.wav`` naming of common mirrors is accepted
too. The release has no transcripts next to the audio, so transcription is left
to ASR. Split by speaker (no official split; four speakers): DC and JE train,
JK validation, KL test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import Adapter, Candidate, Entry, Skipped, bad_name, relpath, walk_files

EMOTIONS: dict[str, tuple[str, str]] = {
    "a": ("anger", "angry"), "d": ("disgust", "contempt or disgust"), "f": ("fear", "fear"),
    "h": ("happiness", "happy"), "n": ("neutral", "neutral"), "sa": ("sadness", "sad"),
    "su": ("surprise", "surprise"),
}
SPEAKERS = ("DC", "JE", "JK", "KL")
SPLITS = {"DC": "train", "JE": "train", "JK": "validation", "KL": "test"}
NAME = re.compile(r"^(?:(DC|JE|JK|KL)_)?(sa|su|a|d|f|h|n)(\d\d)$")


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    base = root / "AudioData" if (root / "AudioData").is_dir() else root
    for path in walk_files(base, {".wav"}):
        if path.name.startswith("."):
            yield Skipped("hidden", relpath(path, root))
            continue
        m = NAME.match(path.stem)
        folder = path.parent.name if path.parent.name in SPEAKERS else None
        speaker = (m.group(1) if m else None) or folder
        if not m or speaker is None:
            yield bad_name(path, root, "expected AudioData/<DC|JE|JK|KL>/<a|d|f|h|n|sa|su>NN.wav or <SPK>_<code>NN.wav")
            continue
        if folder and m.group(1) and folder != m.group(1):
            yield bad_name(path, root, f"file of speaker {m.group(1)} lies in folder {folder}")
            continue
        source, label = EMOTIONS[m.group(2)]
        yield Candidate(
            rel_path=relpath(path, root),
            audio_path=path,
            source_label=source,
            emotion=label,
            split=SPLITS[speaker],
            speaker=f"savee-{speaker}",
            gender="male",
            transcription=None,
        )


ADAPTER = Adapter(
    name="savee",
    layout="AudioData/{DC,JE,JK,KL}/{a,d,f,h,n,sa,su}NN.wav",
    splits="by speaker: DC+JE train, JK validation, KL test",
    scan=scan,
)
