"""Registry guards that need no MLflow store (registering and resolving for real: tests/integration/test_sft_flow.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotionthinker.registry import RegistryError, RegistryLookupError, register_model, resolve_registry_source
from models.backbone import AudioLM
from models.sources import SourceError


def test_a_folder_with_pickle_files_is_not_registered(cfg, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    (folder / "training_args.bin").write_bytes(b"pickle")
    with pytest.raises(RegistryError, match="pickle.*training_args.bin"):
        register_model(cfg, "run", folder, "emotionthinker-base")
    with pytest.raises(RegistryError, match="not a folder"):
        register_model(cfg, "run", tmp_path / "missing", "emotionthinker-base")


def test_resolving_without_a_store_is_a_source_error_and_creates_none(cfg):
    store = cfg.tracking_uri.removeprefix("sqlite:///")
    with pytest.raises(RegistryLookupError, match="no MLflow registry"):
        resolve_registry_source("registry:emotionthinker-base@challenger", cfg)
    with pytest.raises(SourceError):  # what AudioLM.from_source callers catch
        AudioLM.from_source("registry:emotionthinker-base@challenger", cfg)
    with pytest.raises(SourceError, match="not a registry source"):
        resolve_registry_source("random:qwen2audio-tiny", cfg)
    assert not Path(store).exists()
