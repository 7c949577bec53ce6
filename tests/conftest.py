"""Shared fixtures. Every test runs on the `test` profile in a throw-away workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emotionthinker.config import PROJECT_ROOT, load_config

SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()
RAVDESS_DIR = SHARED_DATA / "ravdess"
EMODB_DIR = SHARED_DATA / "emodb"

requires_ravdess = pytest.mark.skipif(not RAVDESS_DIR.is_dir(), reason=f"real RAVDESS data not found at {RAVDESS_DIR}")
requires_emodb = pytest.mark.skipif(not EMODB_DIR.is_dir(), reason=f"real EmoDB data not found at {EMODB_DIR}")


@pytest.fixture
def cfg(tmp_path: Path):
    """`test` profile with every piece of state under tmp_path; services embedded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    return load_config(
        "test",
        environ=env,
        overrides={
            "paths": {
                "workspace": str(tmp_path / "ws"),
                "data": str(tmp_path / "ws" / "data"),
                "cache": str(PROJECT_ROOT / "var" / "cache"),
            }
        },
    )
