"""Errors shared across stages."""

from __future__ import annotations


class StatedStop(Exception):
    """A stage stopped for a reason its message states in full (bad input, too many bad records, an output
    another process is writing): flow and task logs show the message without a traceback, which would only
    bury it. Errors of the code itself keep their tracebacks."""


class InputError(StatedStop, ValueError):
    """Bad input that a rerun cannot fix: the command says what and where (exit 2), and no task retries it."""
