"""`emotionthinker serve` end to end: a real `prefect server start` on a free 127.0.0.1 port, the
scheduled flow served with a 5-second interval, and a scheduled run that the server's scheduler
creates and the runner completes, within a bounded time; then Ctrl-C stops the server with it.

The served flow is `probe_flow` below (schedule.flow_entrypoint), called with the same parameters
as the retrain flow (profile, config_file); it proves it ran by writing a marker file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow, runtime

from emotionthinker.config import PROJECT_ROOT, load_config

ENTRYPOINT = f"{Path(__file__).resolve().relative_to(PROJECT_ROOT)}:probe_flow"
DEADLINE_S = 90
DEPLOYMENT = "probe-every-5s"


@flow(name="schedule-probe")
def probe_flow(profile: str = "tiny", config_file: str | None = None) -> str:
    cfg = load_config(profile, config_file)
    marker = cfg.workspace / "probe" / f"{runtime.flow_run.id}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"profile": cfg.profile, "scheduled_start": str(runtime.flow_run.scheduled_start_time)}))
    return str(marker)


def completed_scheduled_runs(api_url: str, auto_scheduled: bool = True) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[DEPLOYMENT])))
    return [r for r in runs if r.auto_scheduled == auto_scheduled and r.state and r.state.is_completed()]


def test_served_flow_fires_on_its_schedule_on_a_local_server(cfg, config_file, tmp_path):
    from emotionthinker.schedule import free_port, port_is_free

    port = free_port()
    cfg.schedule.prefect_port = port
    cfg.schedule.flow_entrypoint = ENTRYPOINT
    cfg.schedule.deployment_name = DEPLOYMENT
    path = config_file(cfg)
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}  # the runner checks for due runs every second
    env.pop("PREFECT_API_URL", None)
    cmd = [str(Path(sys.executable).parent / "emotionthinker"), "serve", "--profile", "test", "--config", path,
           "--interval", "5"]  # fmt: skip
    start = time.monotonic()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        done = []
        while not done and time.monotonic() - start < DEADLINE_S:
            assert proc.poll() is None, f"serve exited early ({proc.returncode}):\n{Path(log.name).read_text()[-3000:]}"
            time.sleep(2)
            try:
                done = completed_scheduled_runs(api_url)
            except Exception:  # server not up yet
                done = []
        fired_after = time.monotonic() - start
        assert done, f"no scheduled run completed within {DEADLINE_S} s:\n{Path(log.name).read_text()[-3000:]}"
        run = done[0]
        assert run.parameters["profile"] == "test" and run.parameters["config_file"] == str(Path(path).resolve())
        marker = cfg.workspace / "probe" / f"{run.id}.json"
        assert json.loads(marker.read_text())["profile"] == "test"
        assert (cfg.prefect_home / "prefect.db").is_file()  # the server kept its state in the configured home
        print(f"first scheduled run completed {fired_after:.1f} s after `emotionthinker serve` started")

        # The command serve prints for a run now works as printed, from a shell without PREFECT_API_URL.
        [command] = re.findall(r"^run one now, from another shell: (.+)$", Path(log.name).read_text(), re.M)
        assert f"'schedule-probe/{DEPLOYMENT}'" in command
        res = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        manual, deadline = [], time.monotonic() + DEADLINE_S
        while not manual and time.monotonic() < deadline:
            time.sleep(1)
            manual = completed_scheduled_runs(api_url, auto_scheduled=False)
        assert manual and manual[0].parameters == run.parameters, Path(log.name).read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the runner stops, then the server is stopped
            try:
                proc.wait(timeout=60)  # the server gets up to 2 x 20 s to stop (LocalPrefectServer.stop)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    deadline = time.monotonic() + 15
    while not port_is_free("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert port_is_free("127.0.0.1", port), "the Prefect server outlived `emotionthinker serve`"


def test_the_retrain_flow_is_scheduled_unless_another_is_configured():
    from emotionthinker.schedule import scheduled_flow

    chosen = scheduled_flow()
    assert chosen.name == "retrain" and {"profile", "config_file"} <= set(chosen.parameters.properties)
    assert scheduled_flow(ENTRYPOINT).name == "schedule-probe"
    with pytest.raises(FileNotFoundError):
        scheduled_flow("flows/no_such_flow.py:nothing")


def test_serve_refuses_a_port_in_use(cfg):
    import socket

    from emotionthinker.schedule import PrefectServerError, free_port, local_prefect_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        with pytest.raises(PrefectServerError, match="in use"):
            with local_prefect_server(cfg, port=s.getsockname()[1]):
                pass


def test_serve_uses_the_configured_cron_one_run_at_a_time(cfg, monkeypatch, tmp_path):
    """Without --interval the deployment gets schedule.cron in schedule.timezone, limit 1, and the
    parameters every run needs (what the real server then schedules is shown by the first test)."""
    from prefect import Flow
    from prefect.schedules import Schedule

    from emotionthinker.schedule import flow_parameters, serve_flow

    seen = {}
    monkeypatch.setattr(Flow, "serve", lambda self, **kw: seen.update(kw, flow=self.name))
    cfg.schedule.cron, cfg.schedule.timezone = "30 2 * * 1-5", "Europe/Berlin"
    (tmp_path / "c.yaml").write_text("{}")
    serve_flow(probe_flow, cfg, flow_parameters(cfg, tmp_path / "c.yaml"))
    sched = seen["schedule"]
    assert isinstance(sched, Schedule) and (sched.cron, sched.timezone) == ("30 2 * * 1-5", "Europe/Berlin")
    assert seen["limit"] == 1 and seen["name"] == cfg.schedule.deployment_name and seen["flow"] == "schedule-probe"
    assert seen["parameters"] == {"profile": "test", "config_file": str((tmp_path / "c.yaml").resolve())}
