"""Embedded services: environment for Prefect / MLflow / DVC / GX, and the MLflow UI.

Prefect reads its settings once, when it is first imported, so
`configure_environment` must run before anything imports prefect (the CLI
calls it first thing). Defaults are embedded and local: Prefect's temporary
server with state under a project-local PREFECT_HOME, MLflow on a SQLite file,
no telemetry. Pointing at real servers is configuration
(`services.prefect_api_url`, `services.mlflow_tracking_uri`), not code.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.errors import StatedStop

LOCALHOST = "127.0.0.1"


def configure_environment(cfg: Config, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Export the settings the service libraries read from the environment; return what was set."""
    env = os.environ if environ is None else environ
    settings = {
        "PREFECT_HOME": str(cfg.prefect_home),
        # Telemetry off: no network here, and Prefect's analytics cause 'database is locked' noise.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        # The temporary server shares 2 cores with the work itself: 20 s (Prefect's default) is too tight.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": env.get(
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"
        ),
        "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "INFO"),
        # Logs of the plain functions behind the tasks show up in the Prefect run logs too.
        "PREFECT_LOGGING_EXTRA_LOGGERS": env.get("PREFECT_LOGGING_EXTRA_LOGGERS", "emotionthinker"),
        # The same functions also run outside flows (`promote --no-flow`, `infer`, benchmarks): their log
        # lines go to the console there, without a UserWarning each that no flow run can receive them.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": env.get("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore"),
        # Should a server be started from this process, it must not listen beyond this machine.
        "PREFECT_SERVER_API_HOST": LOCALHOST,
    }
    if cfg.services.prefect_api_url:
        settings["PREFECT_API_URL"] = cfg.services.prefect_api_url
    env.update(settings)
    if environ is None:
        cfg.prefect_home.mkdir(parents=True, exist_ok=True)
        # Prefect gives extra loggers its handlers but not a level: without this, INFO progress is lost.
        logging.getLogger("emotionthinker").setLevel(logging.INFO)
    return settings


def local_path(uri: str) -> Path | None:
    """The filesystem path behind a local URI/path (sqlite:///x.db, file:///x, /x), else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" not in uri and ":" not in uri.split("/")[0]:
        return Path(uri)
    return None


def mlflow_ui_command(cfg: Config) -> list[str]:
    """`mlflow server` over the configured store, bound to the configured (local by default) host."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        cfg.tracking_uri,
        "--default-artifact-root",
        cfg.artifact_root,
        "--host",
        cfg.services.ui_host,
        "--port",
        str(cfg.services.ui_port),
        "--workers",
        "1",
    ]


def ui_url(cfg: Config) -> str:
    return f"http://{cfg.services.ui_host}:{cfg.services.ui_port}"


def run_mlflow_ui(cfg: Config) -> int:
    """Serve the MLflow UI in the foreground until Ctrl-C (or SIGTERM); return the server's exit code.

    The server runs in its own process group so that stopping it also stops the
    uvicorn worker `mlflow server` spawns, whichever signal reached us.
    """
    for uri in (cfg.tracking_uri, cfg.artifact_root):
        path = local_path(uri)
        if path is not None:
            (path.parent if uri.startswith("sqlite:") else path).mkdir(parents=True, exist_ok=True)
    proc = start_service(mlflow_ui_command(cfg))

    def _terminate(signum, frame):  # SIGTERM takes the same path as Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_group(proc)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL, to the process group of a child from `start_service`; returns its exit code."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def start_service(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start a server child in its own process group (Ctrl-C reaches only us, and we stop the whole group).

    On Linux the kernel also sends it SIGTERM when this process dies without stopping it (SIGKILL, the
    OOM killer): otherwise such a server outlives us and keeps its port.
    """
    preexec = None
    if sys.platform.startswith("linux"):
        import ctypes

        # Resolved here, in the parent: the child between fork and exec must not import anything.
        preexec = functools.partial(_die_with_parent, ctypes.CDLL(None, use_errno=True).prctl, os.getpid())
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=preexec, **popen_kwargs)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(prctl: Any, parent_pid: int) -> None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _StatedStopWithoutTraceback(logging.Filter):
    """A flow or task stopped by a StatedStop logs its one-line message; its traceback would only bury it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], StatedStop):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_stated_stops() -> None:
    """Install the filter on Prefect's run loggers (idempotent; logging config keeps a logger's filters)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _StatedStopWithoutTraceback) for f in logger.filters):
            logger.addFilter(_StatedStopWithoutTraceback())
