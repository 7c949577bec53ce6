"""MLflow Model Registry for model folders: register a version with an alias, resolve a source to a local folder.

A version's artifacts are the model folder as saved (safetensors weights, tokenizer/processor JSON,
the audiolm.json manifest), logged as plain artifacts of the run that produced it. No MLflow flavour
and no pickle: loading needs nothing but the folder, and a folder holding pickle files is refused.
`registry:<name>@<alias>` (or `@<version>`) resolves to a download cached per version under the
workspace; versions are immutable, so a cached copy never goes stale, while an alias that moves to a
new version resolves to that version's own copy.

A folder whose files are byte-identical to a registered version's (tag `weights_md5`) is not
registered again: a retrain after a code change re-runs its stages (the code is in every cache key),
and a training stage whose inputs did not change reuses its finished model; a second copy
would cost the artifact store the whole model (0.5 GB for the tiny policy) and show the registry two
versions that are one model. The alias moves to the existing version instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.services import local_path
from models.sources import ModelSource, SourceError, build_atomically, parse_source

log = logging.getLogger(__name__)

ARTIFACT_PATH = "model"
TAG_WEIGHTS_DIGEST = "weights_md5"  # DVC's folder md5 (versioning.content_md5), as for datasets
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class RegistryError(RuntimeError):
    """A model cannot be registered (pickle files, store unreachable) or downloaded."""


class RegistryLookupError(SourceError):
    """A registry source names no registered version (unknown model, alias or version; no store yet)."""


def _client(cfg: Config):
    from mlflow import MlflowClient

    from emotionthinker.tracking import configure_mlflow

    configure_mlflow(cfg)  # creates the SQLite store's folder and the experiment on first use
    return MlflowClient(cfg.tracking_uri, cfg.tracking_uri)


def _same_weights_version(client, name: str, digest: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    same = [int(mv.version) for mv in versions if (mv.tags or {}).get(TAG_WEIGHTS_DIGEST) == digest]
    return str(min(same)) if same else None


def register_model(
    cfg: Config,
    run_id: str,
    local_dir: str | Path,
    name: str,
    alias: str | None = "challenger",
    tags: Mapping[str, str] | None = None,
    description: str = "",
) -> str:
    """Log `local_dir` as the run's `model` artifacts, create a new version of `name`, point `alias` at it.

    When a version of `name` already holds byte-identical files, that version gets `alias` and nothing
    is logged or created. Returns the version number (as a string, like MLflow).
    """
    from mlflow.exceptions import MlflowException

    folder = Path(local_dir)
    if not folder.is_dir():
        raise RegistryError(f"cannot register {folder}: not a folder")
    if pickles := sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES):
        raise RegistryError(f"refusing to register {folder}: pickle-format files {pickles[:5]} (save as safetensors)")
    from emotionthinker.versioning import content_md5

    client = _client(cfg)
    digest = content_md5(folder)
    if (same := _same_weights_version(client, name, digest)) is not None:
        try:
            if alias:
                client.set_registered_model_alias(name, alias, same)
            client.set_tag(run_id, "registered_as_existing_version", same)
        except MlflowException as exc:
            raise RegistryError(f"pointing {name}@{alias} at v{same} failed: {exc}") from None
        log.info("%s: run %s produced the weights of version %s; no new version%s", name, run_id, same,
                 f", @{alias} -> v{same}" if alias else "")  # fmt: skip
        return same
    try:
        client.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
        try:
            client.create_registered_model(name, description=description or None)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = client.create_model_version(
            name, source=f"runs:/{run_id}/{ARTIFACT_PATH}", run_id=run_id,
            tags={**dict(tags or {}), TAG_WEIGHTS_DIGEST: digest},
        )
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)
    except MlflowException as exc:
        raise RegistryError(f"registering {name} from run {run_id} failed: {exc}") from None
    log.info("registered %s version %s%s", name, mv.version, f" as @{alias}" if alias else "")
    return str(mv.version)


def lookup_model_version(source: str | ModelSource, cfg: Config):
    """The MLflow ModelVersion a `registry:<name>@<alias or version>` source points at now (no download)."""
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient

    src = parse_source(source) if isinstance(source, str) else source
    if src.kind != "registry":
        raise SourceError(f"{src} is not a registry source")
    store = local_path(cfg.tracking_uri) if cfg.tracking_uri.startswith("sqlite:///") else None
    if store is not None and not store.is_file():  # no store yet: nothing registered (and none created for a lookup)
        raise RegistryLookupError(f"{src}: no MLflow registry at {cfg.tracking_uri} yet")
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    try:
        if src.ref.isdigit():
            return client.get_model_version(src.name, src.ref)
        return client.get_model_version_by_alias(src.name, src.ref)
    except MlflowException as exc:
        raise RegistryLookupError(f"{src}: no such registered model version in {cfg.tracking_uri} ({exc.message})") from None


def check_source(text: str, cfg: Config) -> ModelSource:
    """A source given on the command line, checked before a flow starts: its syntax, that a registry alias or
    version exists, that a local folder is there (a hub id is looked up when it loads). Raises SourceError."""
    src = parse_source(text)
    if src.kind == "registry":
        lookup_model_version(src, cfg)
    elif src.kind == "path" and not src.path.is_dir():
        raise SourceError(f"model source {text!r}: no model folder at {src.path.absolute()}")
    return src


def resolve_registry_source(source: str | ModelSource, cfg: Config) -> Path:
    """Local folder of a `registry:<name>@<alias or version>` source, downloaded once per version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    src = parse_source(source) if isinstance(source, str) else source
    mv = lookup_model_version(src, cfg)
    # Keyed by store and source too: two stores (e.g. two test workspaces) both have a version 1.
    key = hashlib.sha1(f"{cfg.tracking_uri}|{mv.source}".encode()).hexdigest()[:12]
    dest = cfg.workspace / "models" / "registry" / src.name / f"v{mv.version}-{key}"
    if dest.is_dir():
        return dest
    try:
        with build_atomically(dest) as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp), tracking_uri=cfg.tracking_uri))
            if local != tmp:  # the artifacts land in tmp/<artifact path>; publish the folder itself
                for item in local.iterdir():
                    item.rename(tmp / item.name)
                local.rmdir()
    except MlflowException as exc:
        raise RegistryError(f"{src}: downloading version {mv.version} ({mv.source}) failed: {exc.message}") from None
    log.info("resolved %s -> version %s at %s", src, mv.version, dest)
    return dest
