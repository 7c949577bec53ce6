"""Paths in the platform's data files: stored relative to the project root, resolved when used.

A record file that holds absolute paths names one checkout. Its bytes, and with them its DVC hash,
the MLflow ``data_version`` tag and the retrain cache keys, would differ between two clones of the
same data, and a ``dvc pull`` elsewhere would restore records whose clips are not there. So a file
inside the project, or beside it (the ``../shared`` layout), is stored relative to the project root;
a file anywhere else keeps its absolute path. Audio paths in records are the main use.
"""

from __future__ import annotations

import os
from pathlib import Path

from emotionthinker import config


def _root(root: Path | None) -> Path:
    # Looked up at call time, not bound at import, so a test can move the project root.
    return root if root is not None else config.PROJECT_ROOT


def absolute_path(path: str | Path) -> Path:
    """A path the user named, made absolute against the cwd with its symlinks kept. resolve() would swap a
    linked ``../shared`` for its target, and the records built from it would store that checkout-specific
    target instead of ``../shared/...``."""
    return Path(os.path.abspath(Path(path).expanduser()))


def stored_path(path: str | Path, root: Path | None = None) -> str:
    """The form a data file keeps of a path (a relative one is taken against the cwd, like any path on
    the command line): posix and root-relative in or beside the project, else absolute."""
    p = absolute_path(path)
    base = _root(root)
    # abspath keeps a symlinked ../shared as the user laid it out; resolve() is the fallback for a
    # root reached through a symlink (PROJECT_ROOT itself is resolved).
    for candidate in (str(p), str(p.resolve())):
        try:
            rel = Path(os.path.relpath(candidate, base))
        except ValueError:  # another drive (Windows)
            continue
        ups = rel.parts.count("..")  # relpath puts every ".." first
        if ups == 0 or (ups == 1 and len(rel.parts) > 1):
            return rel.as_posix()
    return p.as_posix()


def resolve_stored_path(stored: str | Path, base_dir: Path | None = None, root: Path | None = None) -> Path:
    """Where a stored path's file is: absolute as given; relative against ``base_dir`` when the file is
    there (a file written outside the platform, with paths relative to itself), else the project root."""
    p = Path(stored).expanduser()
    if p.is_absolute():
        return p
    if base_dir is not None and (base_dir / p).exists():
        return Path(os.path.normpath(Path(base_dir).absolute() / p))
    return Path(os.path.normpath(_root(root) / p))


def stored_path_from_file(given: str | Path, base_dir: Path) -> str:
    """The stored form of an audio path read from a record file in ``base_dir``."""
    return stored_path(resolve_stored_path(given, base_dir))
