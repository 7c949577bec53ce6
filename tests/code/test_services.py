"""Embedded services: environment, MLflow tracking helpers, DVC versioning, the MLflow UI."""

from __future__ import annotations

import json
import os
import signal
import socket
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from emotionthinker.config import load_config
from emotionthinker.services import configure_environment, mlflow_ui_command
from emotionthinker.tracking import flatten_params, is_secret_key, redact
from emotionthinker.versioning import (
    VersioningError, dvc_add_and_push, dvc_location, ensure_dvc_repo, read_dvc_md5, remote_has,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# -- environment ------------------------------------------------------------------
def test_environment_is_local_and_quiet_by_default(cfg):
    env: dict[str, str] = {}
    configure_environment(cfg, env)
    assert env["PREFECT_HOME"] == str(cfg.prefect_home) and str(cfg.workspace) in env["PREFECT_HOME"]
    assert "PREFECT_API_URL" not in env  # Prefect's temporary local server
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DVC_NO_ANALYTICS"] == "1"
    assert env["MLFLOW_TRACKING_URI"] == cfg.tracking_uri and cfg.tracking_uri.startswith("sqlite:///")
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"


def test_platform_logs_outside_a_flow_reach_the_console_without_warnings(tmp_path):
    """`promote --no-flow` printed a Prefect UserWarning for every log line of the platform's loggers."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "from emotionthinker.config import load_config\n"
        "from emotionthinker.services import configure_environment\n"
        "configure_environment(load_config('test', environ={}, overrides={'paths': {'workspace': sys.argv[1]}}))\n"
        "from prefect.logging.configuration import setup_logging\n"
        "setup_logging()\n"
        "logging.getLogger('emotionthinker.promotion').warning('outside any flow')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ET_", "PREFECT_LOGGING"))}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ws")], capture_output=True, text=True,
                         env=env, cwd=PROJECT_ROOT, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "emotionthinker.promotion - outside any flow" in out and "Warning" not in out


def test_run_logs_state_a_stated_stop_in_one_line_and_keep_tracebacks_of_bugs(tmp_path):
    """A flow stopped by bad input printed ~70 lines of Prefect traceback above its one-line reason. The filter
    must survive Prefect's own logging set-up, which runs after the flows are imported."""
    code = (
        "import logging\n"
        "import flows\n"
        "from prefect.logging.configuration import setup_logging\n"
        "setup_logging()\n"
        "from emotionthinker.records import JsonlError\n"
        "for exc in (JsonlError('m.jsonl:3: not valid JSON'), RuntimeError('a bug')):\n"
        "    try:\n"
        "        raise exc\n"
        "    except Exception:\n"
        "        logging.getLogger('prefect.flow_runs').exception('Encountered exception during execution: %r', exc,\n"
        "                                                         extra={'flow_run_name': 'f', 'flow_run_id': '0'})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ET_", "PREFECT_LOGGING"))}
    env["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"  # as the CLI sets it: no flow run here
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "JsonlError('m.jsonl:3: not valid JSON')" in out and "RuntimeError('a bug')" in out
    assert out.count("Traceback") == 1 and out.index("Traceback") > out.index("JsonlError"), out


def test_real_servers_are_configuration(tmp_path):
    cfg = load_config(
        "test",
        environ={"ET_SERVICES__PREFECT_API_URL": "http://prefect.internal:4200/api",
                 "ET_SERVICES__MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"},
    )  # fmt: skip
    env: dict[str, str] = {}
    configure_environment(cfg, env)
    assert env["PREFECT_API_URL"] == "http://prefect.internal:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000"


def test_ui_command_binds_localhost_with_the_configured_stores(cfg):
    cmd = mlflow_ui_command(cfg)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == str(cfg.services.ui_port)
    assert cmd[cmd.index("--backend-store-uri") + 1] == cfg.tracking_uri
    assert cmd[cmd.index("--default-artifact-root") + 1] == cfg.artifact_root


# -- secrets --------------------------------------------------------------------------
def test_secrets_never_reach_params_or_artifacts():
    params = flatten_params(
        {"cot": {"base_url": "http://x", "api_key": "sk-abcdefghijklmnopqrstuv", "model": "gpt-4o"},
         "hf_token": "hf_abcdefghijklmnopqrstuvwx", "note": "uses sk-abcdefghijklmnopqrstuv inline",
         "steps": 3, "levels": [1, 2]}
    )  # fmt: skip
    assert params == {"cot.base_url": "http://x", "cot.model": "gpt-4o", "note": "uses <redacted> inline",
                      "steps": "3", "levels": "[1, 2]"}  # fmt: skip
    assert redact({"auth": {"password": "p", "user": "u"}, "rows": [{"secret": 1, "ok": 2}]}) == {
        "auth": {"user": "u"}, "rows": [{"ok": 2}]
    }


def test_settings_that_only_look_like_secrets_are_kept():
    """Secret names match whole words: generation lengths and cache keys must reach MLflow."""
    kept = {"max_new_tokens": 256, "eval": {"judge_max_tokens": 64}, "n_tokens": 9, "cache_key": "ab12", "monkey": 1}
    assert flatten_params(kept) == {"max_new_tokens": "256", "eval.judge_max_tokens": "64", "n_tokens": "9",
                                    "cache_key": "ab12", "monkey": "1"}  # fmt: skip
    for name in ("OPENAI_API_KEY", "apiKey", "accessToken", "hf_token", "x-api-key", "key", "db_password", "Authorization"):
        assert is_secret_key(name), name


# -- MLflow -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracking_cfg(tmp_path_factory):
    """One SQLite store for the module: creating a store runs ~6 s of migrations."""
    ws = tmp_path_factory.mktemp("tracking") / "ws"
    return load_config("test", environ={}, overrides={"paths": {"workspace": str(ws), "data": str(ws / "data")}})


def test_stage_run_records_code_data_profile_and_artifacts(tracking_cfg, tmp_path):
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    from emotionthinker.tracking import git_sha, start_stage_run

    cfg = tracking_cfg
    with start_stage_run(cfg, "annotate", {"prosody": {"hop_s": 0.01}, "api_key": "sk-abcdefghijklmnopqrstuv"},
                         {"data/manifests/demo": "abc123.dir"}) as run:  # fmt: skip
        run.log_metrics({"records": 12, "label.contempt or disgust": 3})
        run.log_dict({"n": 1, "token": "t0ps3cret"}, "stats.json")
        run.log_table([{"id": "a", "reason": "silent"}, {"id": "b", "reason": "corrupt"}], "tables/quarantine.json")
        fig = Figure()
        fig.subplots().plot([0, 1], [1, 0])
        run.log_figure(fig, "plots/curve.png")
    client = MlflowClient(cfg.tracking_uri)
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.tags["stage"] == "annotate" and r.data.tags["profile"] == "test"
    assert r.data.tags["git_sha"] == git_sha() and r.data.tags["data_version.data/manifests/demo"] == "abc123.dir"
    assert r.data.params["prosody.hop_s"] == "0.01" and not any("key" in k for k in r.data.params)
    assert r.data.metrics == {"records": 12.0, "label.contempt_or_disgust": 3.0}
    paths = {a.path for a in client.list_artifacts(run.run_id)} | {
        a.path for d in ("tables", "plots") for a in client.list_artifacts(run.run_id, d)
    }
    assert {"stats.json", "tables/quarantine.json", "tables/quarantine.csv", "plots/curve.png"} <= paths
    stats = json.loads(Path(client.download_artifacts(run.run_id, "stats.json", str(tmp_path))).read_text())
    assert stats == {"n": 1}
    # The experiment keeps its artifacts where the config says, not in ./mlruns.
    location = client.get_experiment(run.experiment_id).artifact_location
    assert location.startswith(str(Path(cfg.artifact_root).resolve()))
    assert not (Path.cwd() / "mlruns").exists()


def test_a_failing_stage_leaves_a_failed_run(tracking_cfg):
    from mlflow import MlflowClient

    from emotionthinker.tracking import start_stage_run

    with pytest.raises(ZeroDivisionError):
        with start_stage_run(tracking_cfg, "train", {}) as run:
            1 / 0
    r = MlflowClient(tracking_cfg.tracking_uri).get_run(run.run_id)
    assert r.info.status == "FAILED" and r.data.tags["error"].startswith("ZeroDivisionError")


# -- DVC ----------------------------------------------------------------------------------
def _git_project(root: Path) -> Path:
    """A throw-away git project laid out like this one: var/ ignored, data/ not."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("var/\n")
    return root


def _project_cfg(project: Path, **services):
    return load_config(
        "tiny",
        environ={},
        overrides={"paths": {"workspace": str(project / "var"), "data": str(project / "data")}, "services": services},
    )


def test_dvc_lives_in_the_project_when_data_is_not_git_ignored(tmp_path, caplog, monkeypatch):
    project = _git_project(tmp_path / "proj")
    monkeypatch.chdir(tmp_path)  # the hint must not depend on the folder a user runs from
    caplog.set_level(logging.INFO, logger="emotionthinker.versioning")
    cfg = _project_cfg(project)
    assert dvc_location(cfg, project).scm
    ensure_dvc_repo(cfg, project)
    committed = (project / ".dvc" / "config").read_text()
    assert "../var/dvc-remote" in committed and "remote = local" in committed  # relative: fit to commit
    (cfg.data_dir / "manifests" / "demo").mkdir(parents=True)
    (cfg.data_dir / "manifests" / "demo" / "manifest.jsonl").write_text('{"id": "a"}\n')
    out = dvc_add_and_push(cfg.data_dir / "manifests" / "demo", cfg, project)
    assert out["dvc_file"] == "data/manifests/demo.dvc" and (project / out["dvc_file"]).is_file()
    assert (project / "data" / "manifests" / ".gitignore").read_text().strip() == "/demo"
    assert remote_has(out["md5"], cfg) and (project / "var" / "dvc-remote" / "files" / "md5").is_dir()
    # One hint, from the project root; DVC's own (relative to the current folder) is not printed.
    hint = f"in {project.resolve()}: git add data/manifests/.gitignore data/manifests/demo.dvc && git commit"
    assert [r.getMessage() for r in caplog.records if "git add" in r.getMessage()] == [f"to pin this data version in git, {hint}"]
    assert "To track the changes with git" not in caplog.text
    subprocess.run(["git", "-C", str(project), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data"], check=True)
    caplog.clear()
    dvc_add_and_push(cfg.data_dir / "manifests" / "demo", cfg, project)  # committed and unchanged: no hint
    assert "git add" not in caplog.text

    # A user-specific remote goes to the uncommitted config.local; the committed config is unchanged.
    other = _project_cfg(project, dvc_remote_url=str(tmp_path / "elsewhere"))
    ensure_dvc_repo(other, project)
    assert (project / ".dvc" / "config").read_text() == committed
    assert str(tmp_path / "elsewhere") in (project / ".dvc" / "config.local").read_text()


def test_ignored_or_outside_data_gets_a_standalone_repo(tmp_path, cfg):
    project = _git_project(tmp_path / "proj")
    ws = project / "var" / "test"
    ignored = load_config("test", environ={}, overrides={"paths": {"workspace": str(ws), "data": str(ws / "data")}})
    loc = dvc_location(ignored, project)
    assert not loc.scm and loc.root == (project / "var" / "test").resolve()
    outside = dvc_location(cfg, project)  # the test workspace under tmp_path, outside any git tree
    assert not outside.scm and outside.root == cfg.workspace.resolve()


def test_add_and_push_is_idempotent_and_refuses_outside_paths(cfg, tmp_path):
    data = cfg.data_dir / "manifests" / "x"
    data.mkdir(parents=True)
    (data / "manifest.jsonl").write_text('{"id": "a"}\n')
    first = dvc_add_and_push(data, cfg)
    assert not (PROJECT_ROOT / "data" / "manifests" / "x.dvc").exists()  # the real project is untouched
    assert "no_scm = True" in (cfg.workspace / ".dvc" / "config").read_text()  # standalone repo in the workspace
    assert first == dvc_add_and_push(data, cfg) and remote_has(first["md5"], cfg)
    (data / "manifest.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
    second = dvc_add_and_push(data, cfg)
    assert second["md5"] != first["md5"] and read_dvc_md5(cfg.workspace / second["dvc_file"]) == second["md5"]
    assert remote_has(first["md5"], cfg) and remote_has(second["md5"], cfg)  # old versions stay retrievable
    stray = tmp_path / "stray.txt"
    stray.write_text("x")
    with pytest.raises(VersioningError, match="outside the DVC repository"):
        dvc_add_and_push(stray, cfg)


# -- MLflow UI ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_on_localhost_and_stops_with_its_worker(cfg, tmp_path):
    port = _free_port()
    config = tmp_path / "ui.yaml"
    config.write_text(yaml.safe_dump({"paths": {"workspace": str(cfg.workspace), "data": str(cfg.data_dir)},
                                      "services": {"ui_port": port}}))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    cli = [sys.executable, "-m", "emotionthinker.cli", "ui", "-p", "test", "-c", str(config)]
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        assert body == b"OK"
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=emotionthinker"
        assert json.loads(urllib.request.urlopen(api, timeout=5).read())["experiment"]["name"] == "emotionthinker"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in out
    with pytest.raises(OSError):  # the uvicorn worker is gone with the server
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_data_version_tags_keep_only_characters_mlflow_accepts():
    from emotionthinker.tracking import data_version_tags

    tags = data_version_tags({"data/cot/ravdess+demo": "ab12.dir"})
    assert tags["data_version.data/cot/ravdess_demo"] == "ab12.dir"
    assert '"data/cot/ravdess+demo"' in tags["data_version"]  # the exact name is kept in the JSON tag


def test_git_sha_is_not_dirtied_by_dvc_editing_data_gitignore(tmp_path):
    import os
    import subprocess

    from emotionthinker.tracking import git_sha as cached_git_sha

    git_sha = cached_git_sha.__wrapped__  # the lru_cache would hide the change

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".gitignore").write_text("/raw\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = git_sha(tmp_path)
    assert "+" not in clean
    os.utime(tmp_path / "code.py", (1, 1))  # rewritten with the same content (a checkout, a formatter): stale stat only
    assert git_sha(tmp_path) == clean
    (tmp_path / "data" / ".gitignore").write_text("/raw\n/demo\n")  # what `dvc add data/demo` does
    assert git_sha(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2  # changed\n")
    first = git_sha(tmp_path)
    assert first.startswith(clean + "+dirty.") and git_sha(tmp_path) == first  # the same edit: the same version
    (tmp_path / "code.py").write_text("x = 3  # another uncommitted edit\n")
    second = git_sha(tmp_path)
    assert second.startswith(clean + "+dirty.") and second != first  # cache keys must see it
    (tmp_path / "helper.py").write_text("y = 1\n")  # a new module, not yet added to git
    with_helper = git_sha(tmp_path)
    assert with_helper not in (second, clean)
    (tmp_path / "helper.py").write_text("y = 2\n")
    assert git_sha(tmp_path) != with_helper
    (tmp_path / "data" / "scratch.py").write_text("z = 1\n")  # data/ stays out, as for tracked files
    (tmp_path / "notes.txt").write_text("not code\n")
    assert git_sha(tmp_path) == git_sha(tmp_path) != with_helper


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow, or absent in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_service_dies_with_the_process_that_started_it(tmp_path: Path):
    # `emotionthinker serve` / `ui` killed with SIGKILL cannot stop their server; the kernel must.
    pidfile = tmp_path / "service.pid"
    script = (
        "import sys, time\n"
        "from emotionthinker.services import start_service\n"
        "p = start_service([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    service = None
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        service = int(pidfile.read_text())
        assert _running(service)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while _running(service) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(service), "the service outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
        if service is not None and _running(service):
            os.kill(service, signal.SIGKILL)
