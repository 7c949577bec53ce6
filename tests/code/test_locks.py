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


def test_a_held_lock_names_its_holder_and_a_killed_holder_releases_it(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    child = hold(path, 120)
    try:
        with pytest.raises(LockTimeout, match=rf"x\.lock is held now by pid {child.pid} on \S+ since \S+ \(`-c "):
            with file_lock(path, 0):
                pytest.fail("got a lock another process holds")
    finally:
        child.kill()
        child.wait()
    with file_lock(path, 0) as waited:  # the kernel dropped the dead holder's lock: nothing stale
        assert waited < 1 and json.loads(path.read_text())["pid"] == os.getpid()
    assert path.read_text() == ""  # a released lock names no holder


def test_a_wait_is_bounded_by_the_timeout(tmp_path):
    path = tmp_path / "x.lock"
    child = hold(path, 1.0)
    with file_lock(path, 60) as waited:  # the holder finishes within the wait
        assert 0 < waited < 60
    child.wait()
    child = hold(path, 60)
    try:
        with pytest.raises(LockTimeout, match=r"held for more than 0\.3 s by pid"):
            with file_lock(path, 0.3):
                pytest.fail("got a lock another process holds")
    finally:
        child.kill()
        child.wait()
