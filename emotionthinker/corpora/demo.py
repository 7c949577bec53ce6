"""The synthetic demo corpus (``emotionthinker demo-corpus``): ``metadata.jsonl`` beside the clips.

One line per clip with audio_path (relative), emotion, transcription, speaker,
gender, split and the exact synthesis settings; every extra key stays on the
record because the prosody tests use the settings as an oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import Adapter, CorpusLayoutError, Entry
from emotionthinker.corpora.jsonl import read_file

METADATA = "metadata.jsonl"


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    meta = root / METADATA
    if not meta.is_file():
        raise CorpusLayoutError(f"{meta} not found: make the corpus with `emotionthinker demo-corpus --out {root}`")
    yield from read_file(meta, root)


ADAPTER = Adapter(
    name="demo",
    layout=f"{METADATA} (audio_path, emotion, transcription, speaker, gender, split, synthesis settings) + clips",
    splits="from metadata.jsonl",
    scan=scan,
)
