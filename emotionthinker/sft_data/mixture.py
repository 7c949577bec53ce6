"""Stage-I task mixture: the largest sample set whose family shares match the configured ratios.

Shares are kept exactly rather than filled up with whatever is plentiful:
otherwise a corpus rich in attribute questions would drown the rarer stress
and comparative tasks and the ASR share would drift away from the paper's.
Which candidates of a family are taken is a seeded hash of the sample id, so
the choice is stable when records are added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from emotionthinker.sft_data.prompts import unit_hash


def plan_mixture(available: Mapping[str, int], weights: Mapping[str, float], cap: int = 0) -> tuple[float, dict[str, int]]:
    """(total size, quota per family) meeting the weights with what is available, at most `cap` (0: no cap).

    Families with no candidates or no weight drop out and the others are renormalised among themselves.
    """
    active = {f: w for f, w in weights.items() if w > 0 and available.get(f, 0) > 0}
    if not active:
        return 0.0, {f: 0 for f in weights}
    total_w = sum(active.values())
    shares = {f: w / total_w for f, w in active.items()}
    n = min(available[f] / s for f, s in shares.items())
    if cap:
        n = min(n, float(cap))
    quotas = {f: 0 for f in weights}
    # Rounded, not floored: in a small split (validation) flooring would give a rare family 0 samples.
    quotas.update({f: min(available[f], math.floor(s * n + 0.5 + 1e-9)) for f, s in shares.items()})
    return n, quotas


def hash_order(samples: Sequence[dict[str, Any]], seed: int, salt: str, key: str = "id") -> list[dict[str, Any]]:
    """Samples sorted by a seeded hash of their key: a shuffle that does not move when others are added."""
    return sorted(samples, key=lambda s: (unit_hash(seed, salt, s[key]), s[key]))


def select(samples: Sequence[dict[str, Any]], quota: int, seed: int, salt: str) -> list[dict[str, Any]]:
    return hash_order(samples, seed, salt)[:quota]
