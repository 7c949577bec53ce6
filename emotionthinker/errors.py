"""Errors shared across stages."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input that a rerun cannot fix: the command says what and where (exit 2), and no task retries it."""
