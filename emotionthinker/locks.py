"""Exclusive file locks between processes of one machine, saying who holds them.

flock, not a lock file that exists or not: the kernel drops the lock when its holder dies, so a
crash or a kill never leaves a stale lock behind. The holder writes who it is into the file, so a
process that cannot get the lock can say which run is in its way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from emotionthinker.errors import StatedStop


class LockTimeout(RuntimeError):
    """The lock stayed held by another process for longer than the caller would wait."""

    def __init__(self, path: Path, timeout_s: float, holder: str) -> None:
        self.path, self.timeout_s, self.holder = path, timeout_s, holder
        waited = f"for more than {timeout_s:g} s" if timeout_s else "now"
        super().__init__(f"{path} is held {waited} by {holder}")


def holder_of(path: Path) -> str:
    """Who wrote the lock file last (the holder, while it is held): pid, host, start time, command."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} (`{info.get('command')}`)"


@contextmanager
def file_lock(path: Path, timeout_s: float, poll_s: float = 0.05,
              refuse: Callable[[LockTimeout], Exception] | None = None) -> Iterator[float]:  # fmt: skip
    """Hold an exclusive flock on `path`, waiting at most `timeout_s` (0: do not wait); yield the seconds
    waited. Each call opens its own file description, so it excludes other threads of this process as
    well as other processes. When the lock is not got, raises `refuse(timeout)` (the caller's own error)
    or the LockTimeout itself; errors of the body pass through untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(path, "a+", encoding="utf-8") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start >= timeout_s:
                    timeout = LockTimeout(path, timeout_s, holder_of(path))
                    raise (refuse(timeout) if refuse else timeout) from None
                time.sleep(poll_s)
        try:
            waited = time.monotonic() - start
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }))  # fmt: skip
            fh.flush()
            yield waited
        finally:
            fh.seek(0)
            fh.truncate()  # a released lock names no holder
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class OutputBusy(StatedStop, RuntimeError):
    """Another process is writing the same output."""


@contextmanager
def output_lock(lock: Path, doing: str, on_rerun: str, error: Callable[[str], Exception] = OutputBusy) -> Iterator[None]:
    """One process writes an output at a time: a second one (a hand-started stage beside the nightly retrain
    writing the same output, say) raises `error` at once, naming the holder, instead of appending to the same
    streams. `doing` says what the holder does ("annotating into X"), `on_rerun` what a later rerun reuses."""

    def busy(exc: LockTimeout) -> Exception:
        return error(f"another process is {doing}: {exc.holder}. Run this again when it has finished: {on_rerun}")

    with file_lock(lock, 0, refuse=busy):
        yield


def workspace_lock(workspace: Path, stage: str, output: Path) -> Path:
    """A lock file for a stage's output in <workspace>/locks, named by the output's path: for outputs whose
    folder DVC versions whole, where a lock file beside them would change the data version."""
    key = hashlib.sha1(str(Path(output).resolve()).encode()).hexdigest()[:12]
    return Path(workspace) / "locks" / f"{stage}-{key}.lock"
