"""Retry conditions for tasks: a retry is worth it only when the next try can go differently."""

from __future__ import annotations

from typing import Any

from emotionthinker.errors import InputError


def unless_input_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a crash (a killed worker, a full disk freed meanwhile), not bad input that fails the same way again."""
    return not isinstance(state.data, InputError)
