"""What the training flows (SFT, reward model, GRPO-PTR) share at the end of their tracked run."""

from __future__ import annotations

import logging
import time

from emotionthinker.tracking import StageRun


def finish_training_run(run: StageRun, logger: logging.Logger | logging.LoggerAdapter, started: float,
                        registered: dict[str, str] | None) -> float:  # fmt: skip
    """Say what was registered, log the flow's wall time (seconds since `started`, a perf_counter reading) on
    the run so runs compare by cost in the UI, and return it for the flow's result."""
    if registered:
        logger.info("registered %s version %s as @%s", registered["name"], registered["version"], registered["alias"])
    wall_s = round(time.perf_counter() - started, 1)
    run.log_metrics({"wall_s": wall_s})
    return wall_s

