"""Shared fixtures. Every test runs on the `test` profile in a throw-away workspace.

Prefect reads its settings when first imported, so PREFECT_HOME points at a
throw-away folder here, at collection time, before any test module imports
prefect; the user's ~/.prefect and the project's var/ are never touched.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml

from emotionthinker.config import PROJECT_ROOT, load_config

SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()
RAVDESS_DIR = SHARED_DATA / "ravdess"
EMODB_DIR = SHARED_DATA / "emodb"

requires_ravdess = pytest.mark.skipif(not RAVDESS_DIR.is_dir(), reason=f"real RAVDESS data not found at {RAVDESS_DIR}")
requires_emodb = pytest.mark.skipif(not EMODB_DIR.is_dir(), reason=f"real EmoDB data not found at {EMODB_DIR}")
requires_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"../shared/data not found at {SHARED_DATA}")

if "prefect" in sys.modules:  # pragma: no cover - depends on collection order
    warnings.warn("prefect was imported before tests/conftest.py: PREFECT_HOME may not be isolated")
_PREFECT_HOME = tempfile.mkdtemp(prefix="et-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.update(
    {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "emotionthinker",
        # library code logs outside flow runs in unit tests; that is expected, not a warning
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
)


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


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch):
    """`disk_full(after)`: from when the folder `after` exists (from now, with None) the disk reports 100 bytes
    free, so the checkpoint guard (models.checkpoints) refuses the next save; `disk_full.undo()` frees it."""
    real = shutil.disk_usage

    def fill(after: Path | None = None) -> None:
        monkeypatch.setattr(shutil, "disk_usage",
                            lambda p: real(p)._replace(free=100) if after is None or after.is_dir() else real(p))  # fmt: skip

    fill.undo = lambda: monkeypatch.setattr(shutil, "disk_usage", real)
    return fill


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (SQLite in a temp dir) shared by every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store: creating one runs ~6 s of migrations, copying it is instant."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def config_file(cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store_template: Path):
    """Write `cfg` (the test profile in tmp_path) to YAML so that a flow, which loads its own config, sees it.

    `cfg` can be changed by the test before calling the returned function. The test's MLflow
    store starts as a copy of the session's migrated template.
    """
    for key in [k for k in os.environ if k.startswith("ET_")]:
        monkeypatch.delenv(key)
    store = Path(cfg.tracking_uri.removeprefix("sqlite:///"))
    store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_store_template, store)

    def write(config=None) -> str:
        config = config or cfg
        data = config.model_dump(mode="json", exclude={"profile"})
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    return write
