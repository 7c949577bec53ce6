"""Response cache for LLM calls, keyed by prompt hash (SQLite file in the workspace).

Only accepted responses are stored, so a rerun after deleting the output (or a
second data set sharing records) costs no tokens, while a rejected response is
never replayed. SQLite gives atomic writes and safe use from worker threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


class ResponseCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, text TEXT, "
                "usage TEXT, created REAL)"
            )
            self._db.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT model, text, usage FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"model": row[0], "text": row[1], "usage": json.loads(row[2] or "{}")}

    def put(self, key: str, model: str, text: str, usage: dict[str, int] | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, text, usage, created) VALUES (?, ?, ?, ?, ?)",
                (key, model, text, json.dumps(usage or {}), time.time()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
