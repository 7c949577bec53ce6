"""Exclusive file locks between processes of one machine, saying who holds them.

flock, not a lock file that exists or not: the kernel drops the lock when its holder dies, so a
crash or a kill never leaves a stale lock behind. The holder writes who it is into the file, so a
process that cannot get the lock can say which run is in its way.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


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
