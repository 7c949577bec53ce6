"""File locks between processes: who holds one is named, a killed holder releases it, waits are bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emotionthinker.locks import LockTimeout, file_lock

HOLD = """
import sys, time
from pathlib import Path
from emotionthinker.locks import file_lock
with file_lock(Path(sys.argv[1]), 0):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the lock for `seconds` (returned once it holds it)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def refused_while_held(path: Path, timeout_s: float, match: str) -> None:
    """Try the lock while another process holds it (`match` may name its {pid}); kill that process after."""
    child = hold(path, 120)
    try:
        with pytest.raises(LockTimeout, match=match.format(pid=child.pid)):
            with file_lock(path, timeout_s):
                pytest.fail("got a lock another process holds")
    finally:
        child.kill()
        child.wait()


def test_a_held_lock_names_its_holder_and_a_killed_holder_releases_it(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    refused_while_held(path, 0, r"x\.lock is held now by pid {pid} on \S+ since \S+ \(`-c ")
    with file_lock(path, 0) as waited:  # the kernel dropped the dead holder's lock: nothing stale
        assert waited < 1 and json.loads(path.read_text())["pid"] == os.getpid()
    assert path.read_text() == ""  # a released lock names no holder


def test_a_wait_is_bounded_by_the_timeout(tmp_path):
    path = tmp_path / "x.lock"
    child = hold(path, 1.0)
    with file_lock(path, 60) as waited:  # the holder finishes within the wait
        assert 0 < waited < 60
    child.wait()
    refused_while_held(path, 0.3, r"held for more than 0\.3 s by pid {pid} ")


def test_a_refused_lock_raises_the_callers_error_and_the_body_s_errors_pass_through(tmp_path):
    path = tmp_path / "x.lock"
    refused = []
    with file_lock(path, 0):
        with pytest.raises(KeyError, match="busy"):
            with file_lock(path, 0, refuse=lambda exc: refused.append(exc) or KeyError("busy")):
                pytest.fail("got a held lock")
    assert isinstance(refused[0], LockTimeout) and refused[0].path == path
    with pytest.raises(LockTimeout, match="from the body"):  # not turned into the caller's error
        with file_lock(path, 0, refuse=lambda exc: KeyError("busy")):
            raise LockTimeout(path, 0, "from the body")


@pytest.mark.parametrize(
    "helper, doing",
    [("emotionthinker.annotate", "annotating into"), ("emotionthinker.cot.stage", "writing reasoning into"),
     ("emotionthinker.sft_data", "building the SFT corpus in")],
)
def test_a_stage_output_is_written_by_one_process_at_a_time(cfg, tmp_path, helper, doing):
    """The data stages that stream into a versioned folder lock it from <workspace>/locks (a lock file inside
    would change the folder's DVC hash); a second writer is refused naming the holder, another output is not."""
    import importlib

    from emotionthinker.locks import OutputBusy, workspace_lock

    output_lock = importlib.import_module(helper).output_lock
    out = cfg.data_dir / "x" / "demo"
    stage = workspace_lock(cfg.workspace, "s", out)
    assert stage.parent == cfg.workspace / "locks" and stage == workspace_lock(cfg.workspace, "s", out / ".." / "demo")
    assert stage != workspace_lock(cfg.workspace, "s", out.parent / "other")
    child = subprocess.Popen([sys.executable, "-c", HOLD_OUTPUT, helper, str(out), cfg.workspace.as_posix()],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusy, match=rf"another process is {doing} {out}: pid {child.pid} on "):
            with output_lock(out, cfg):
                pytest.fail("two writers of one output")
        with output_lock(out.parent / "other", cfg):
            pass
    finally:
        child.kill()
        child.wait()
    with output_lock(out, cfg):  # released with its holder
        pass
    assert not any(out.parent.glob("*.lock")) and not out.exists()


HOLD_OUTPUT = """
import importlib, sys, time
from pathlib import Path
from emotionthinker.config import load_config
cfg = load_config("test", overrides={"paths": {"workspace": sys.argv[3]}})
with importlib.import_module(sys.argv[1]).output_lock(Path(sys.argv[2]), cfg):
    print("held", flush=True)
    time.sleep(120)
"""
