"""Scheduled retraining without infrastructure: `emotionthinker serve`.

Cron schedules need a real Prefect server (the temporary one dies with its process and runs no
scheduler), so `serve` starts `prefect server start` on 127.0.0.1 as a child process, with its
state in the configured PREFECT_HOME, then serves the retrain flow from this process on
`schedule.cron`: Prefect's scheduler creates the runs and this process's runner executes them.
With `services.prefect_api_url` set, no server is started and the flow is served against that one.
Servers with work pools (process, Docker/GPU) are prefect.yaml's business, not this module's.

Prefect reads its settings when first imported, so nothing here imports it at module level, and
PREFECT_API_URL is exported before the first import.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotionthinker.config import PROJECT_ROOT, Config
from emotionthinker.services import configure_environment, start_service, stop_group

if TYPE_CHECKING:
    from prefect import Flow

log = logging.getLogger(__name__)

RETRAIN_ENTRYPOINT = "flows/retrain.py:retrain_flow"


class PrefectServerError(RuntimeError):
    """The local Prefect server did not start (port taken, crashed, or not healthy in time)."""


# -- which flow ---------------------------------------------------------------------------------
def scheduled_flow(entrypoint: str | None = None) -> "Flow":
    """The flow to run on the schedule: `entrypoint` (<file.py>:<function>, relative to the project)
    when given, else flows.retrain.retrain_flow."""
    if entrypoint:
        from prefect.flows import load_flow_from_entrypoint

        path, _, func = entrypoint.rpartition(":")
        resolved = Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path
        if not resolved.is_file() or not func:
            raise FileNotFoundError(f"schedule.flow_entrypoint {entrypoint!r}: expected <existing file.py>:<flow function>")
        return load_flow_from_entrypoint(f"{resolved}:{func}")
    from flows.retrain import retrain_flow

    return retrain_flow


# -- the local server ---------------------------------------------------------------------------
@dataclass
class LocalPrefectServer:
    process: subprocess.Popen
    host: str
    port: int
    log_file: Path

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop the server and the processes it started (own process group); return its exit code."""
        return stop_group(self.process, timeout)


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now. SO_REUSEADDR as uvicorn sets it: connections of an
    earlier server still in TIME_WAIT do not block a new one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def prefect_server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def server_environment(cfg: Config, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: this one plus the platform's settings (PREFECT_HOME, no telemetry)."""
    env = dict(os.environ)
    configure_environment(cfg, env)
    env.pop("PREFECT_API_URL", None)  # the server is the API; a client URL here would only confuse it
    env.update(extra or {})
    return env


def wait_until_healthy(server: LocalPrefectServer, timeout_s: float) -> float:
    """Poll /api/health until it answers; raise PrefectServerError (with the log tail) on exit or timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if server.process.poll() is not None:
            raise PrefectServerError(f"prefect server exited with code {server.process.returncode}:\n{_tail(server.log_file)}")
        try:
            with urllib.request.urlopen(f"{server.api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise PrefectServerError(f"prefect server not healthy after {timeout_s:.0f} s:\n{_tail(server.log_file)}")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@contextmanager
def local_prefect_server(
    cfg: Config, port: int | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[LocalPrefectServer]:
    """`prefect server start` bound to schedule.prefect_host; stopped (with its children) on exit."""
    host = cfg.schedule.prefect_host
    port = port or cfg.schedule.prefect_port
    if not port_is_free(host, port):
        raise PrefectServerError(
            f"{host}:{port} is in use (another Prefect server?): choose another with --port or schedule.prefect_port, "
            "or point services.prefect_api_url at the running server"
        )
    log_dir = cfg.prefect_home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"server-{port}.log"
    with open(log_file, "ab") as out:
        proc = start_service(prefect_server_command(host, port), env=server_environment(cfg, extra_env), stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    server = LocalPrefectServer(proc, host, port, log_file)
    try:
        took = wait_until_healthy(server, cfg.schedule.server_startup_timeout_s)
        log.info("Prefect server up at %s in %.1f s (log %s)", server.ui_url, took, log_file)
        yield server
    finally:
        server.stop()


# -- serving --------------------------------------------------------------------------------------
def flow_parameters(cfg: Config, config_file: str | Path | None) -> dict[str, Any]:
    """What every scheduled run gets: the profile and an absolute config path (runs start elsewhere)."""
    return {"profile": cfg.profile, "config_file": str(Path(config_file).resolve()) if config_file else None}


def serve_flow(
    flow: "Flow", cfg: Config, parameters: dict[str, Any], interval_s: float | None = None, name: str | None = None
) -> None:
    """Serve `flow` on schedule.cron (timezone-aware), or every `interval_s` seconds; blocks until stopped.

    One run at a time (`limit=1`): a retrain that outlasts its period must not overlap the next.
    On shutdown Prefect pauses the schedule so runs do not pile up while nobody serves them.
    """
    from prefect.schedules import Cron, Interval

    sc = cfg.schedule
    schedule = Interval(interval_s) if interval_s else Cron(sc.cron, timezone=sc.timezone)
    flow.serve(name=name or sc.deployment_name, schedule=schedule, parameters=parameters, limit=1,
               tags=["emotionthinker", cfg.profile])  # fmt: skip


def serve(
    cfg: Config, config_file: str | Path | None = None, interval_s: float | None = None, port: int | None = None
) -> None:
    """`emotionthinker serve`: local Prefect server (unless one is configured) + the scheduled flow."""
    params = flow_parameters(cfg, config_file)
    if cfg.services.prefect_api_url:
        os.environ["PREFECT_API_URL"] = cfg.services.prefect_api_url
        serve_flow(scheduled_flow(cfg.schedule.flow_entrypoint or None), cfg, params, interval_s)
        return
    with local_prefect_server(cfg, port) as server:
        os.environ["PREFECT_API_URL"] = server.api_url  # before Prefect's first import; the runs inherit it
        from prefect.settings import PREFECT_API_URL, temporary_settings

        flow = scheduled_flow(cfg.schedule.flow_entrypoint or None)
        print(f"Prefect server: {server.ui_url} (log {server.log_file}); Ctrl-C stops both", flush=True)
        # The first scheduled run comes one interval (or the next cron time) from now. Prefect's own hint
        # below lacks the API URL, and without it `prefect` talks to a temporary server of its own.
        prefect_cli = Path(sys.executable).parent / "prefect"
        print(f"run one now, from another shell: PREFECT_API_URL={server.api_url} {prefect_cli} deployment run "
              f"'{flow.name}/{cfg.schedule.deployment_name}'", flush=True)  # fmt: skip
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):  # in case Prefect was imported already
            serve_flow(flow, cfg, params, interval_s)
