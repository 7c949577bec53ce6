"""Retry conditions for tasks: a retry is worth it only when the next try can go differently."""

from __future__ import annotations

from typing import Any

from emotionthinker.errors import StatedStop


def unless_stated_stop(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a crash (a killed worker, a full disk freed meanwhile), not a stated stop: bad input, too many
    bad records or an output another process is writing fail the same way again two seconds later."""
    return not isinstance(state.data, StatedStop)
