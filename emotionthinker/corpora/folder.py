"""Ad-hoc folders: ``<root>/<label>/<any audio file>``, the label being the folder name.

For ingesting whatever someone drops on the platform, including broken files:
every file ends up as a record, a quarantine entry with its reason (unreadable
header, too long, unsupported format, no label folder) or, for a folder name
outside the nine classes, an exclusion counted under that name. Hidden files
(``.DS_Store``) are skipped and counted. Speaker unknown; everything is train.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import (
    AUDIO_EXTENSIONS, Adapter, Candidate, Entry, Rejected, Skipped, is_hidden, relpath, walk_files,
)
from emotionthinker.labels import normalize_label


def label_of(folder: str) -> str | None:
    """'contempt_or_disgust', 'Fear', 'surprised' -> a label; folder names cannot hold '/'."""
    return normalize_label(folder.replace("_", " ").replace("-", " "))


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    for path in walk_files(root):
        rel = relpath(path, root)
        if is_hidden(path, root):
            yield Skipped("hidden", rel)
            continue
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            yield Rejected(rel, path, "no_label", "MissingLabel", "file lies directly under the root, not in a <label>/ folder")
            continue
        folder = parts[0]
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            yield Rejected(rel, path, "unsupported_format", "UnsupportedFormat",
                           f"extension {path.suffix or '(none)'!r} is not one libsndfile reads", folder)
            continue
        yield Candidate(rel, path, folder, label_of(folder), "train", "unknown")


ADAPTER = Adapter(
    name="folder",
    layout="<label>/<file>.{wav,flac,ogg,mp3,...}",
    splits="everything train",
    scan=scan,
)
