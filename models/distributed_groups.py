"""Gather each group of completions whole across processes before tau and advantages.

With data parallelism a step's global batch of prompts x K completions is split over processes,
and one prompt's K completions may land on different ranks (TRL's sampler does this). Tau and the
group-normalised advantages need every member of a group, so the trainer gathers the small
per-completion values (rewards, R_t, correctness, group ids, even the completion strings) from all
ranks, computes on the global view, and each rank takes back its own slice:

    gathered = gather_groups({"group_ids": ids, "rf": rf, "ro": ro, "rt": rt}, num_generations=K)
    rewards, trust = ptr_rewards(gathered["rf"], gathered["ro"], gathered["rt"], gathered["group_ids"], alphas)
    advantages = gathered.local(group_advantages(rewards, gathered["group_ids"]))

Every rank computes the same global numbers, so nothing has to be broadcast back. Group ids must be
unique per prompt across all ranks within a step. Without an initialised process group (one
process) the local batch is the global one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist

Value = torch.Tensor | list[Any]


class GroupSplitError(RuntimeError):
    """The gathered batch does not hold whole groups, or ranks sent inconsistent fields."""


@dataclass(frozen=True)
class GatheredBatch:
    """The global view of a step's completions, rank 0's share first, then rank 1's, ..."""

    data: dict[str, Value]
    offsets: tuple[int, ...]  # rank r owns rows offsets[r]:offsets[r + 1]
    rank: int

    def __getitem__(self, key: str) -> Value:
        return self.data[key]

    @property
    def world_size(self) -> int:
        return len(self.offsets) - 1

    def local(self, value: Value) -> Value:
        """This rank's rows of a global per-completion value (e.g. the advantages)."""
        if len(value) != self.offsets[-1]:
            raise ValueError(f"expected a global value with {self.offsets[-1]} rows, got {len(value)}")
        return value[self.offsets[self.rank] : self.offsets[self.rank + 1]]


def _length(key: str, value: Value) -> int:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            raise ValueError(f"{key}: a per-completion tensor needs a batch dimension")
        return value.shape[0]
    if isinstance(value, list):
        return len(value)
    raise TypeError(f"{key}: expected a tensor or a list, got {type(value).__name__}")


def _signature(local: Mapping[str, Value]) -> list[tuple[str, str, str, tuple[int, ...]]]:
    # What each rank sends: a mismatch would make the collectives below hang or mix fields.
    sig = []
    for key in sorted(local):
        v = local[key]
        if isinstance(v, torch.Tensor):
            sig.append((key, "tensor", str(v.dtype), tuple(v.shape[1:])))
        else:
            sig.append((key, "list", "", ()))
    return sig


def _gather_tensor(value: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
    world = len(sizes)
    as_bool = value.dtype == torch.bool  # not every backend reduces bool tensors
    send = value.detach().to(torch.uint8) if as_bool else value.detach()
    padded = send.new_zeros((max(sizes), *send.shape[1:]))
    padded[: send.shape[0]] = send
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)])
    return out.bool() if as_bool else out


def check_whole_groups(group_ids: Value, num_generations: int) -> None:
    """Raise GroupSplitError unless every group id occurs exactly ``num_generations`` times."""
    ids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    wrong = {g: n for g, n in Counter(ids).items() if n != num_generations}
    if wrong:
        shown = dict(list(wrong.items())[:5])
        raise GroupSplitError(f"{len(wrong)} group(s) not whole after gathering (want {num_generations} each): {shown}")


def gather_groups(
    local: Mapping[str, Value],
    *,
    group_key: str = "group_ids",
    num_generations: int | None = None,
    group: Any = None,
) -> GatheredBatch:
    """All ranks' per-completion values concatenated in rank order; collective, call on every rank.

    Tensors travel by ``all_gather`` (padded to the largest share, so ranks may hold different
    numbers of completions), lists of Python objects (completion strings, gold labels) by
    ``all_gather_object``. With NCCL the tensors must be on this rank's GPU and
    ``torch.cuda.set_device`` must have been called. ``num_generations`` checks that every group
    arrived whole.
    """
    if group_key not in local:
        raise KeyError(f"local batch has no {group_key!r} field")
    lengths = {key: _length(key, v) for key, v in local.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"per-completion fields differ in length: {lengths}")
    n_local = lengths[group_key]

    if not (dist.is_available() and dist.is_initialized()):
        gathered = GatheredBatch(dict(local), (0, n_local), 0)
    else:
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        headers: list[Any] = [None] * world
        dist.all_gather_object(headers, (n_local, _signature(local)), group=group)
        sizes = [h[0] for h in headers]
        if any(h[1] != headers[0][1] for h in headers):
            raise GroupSplitError(f"ranks sent different fields: {[h[1] for h in headers]}")
        data: dict[str, Value] = {}
        for key in sorted(local):  # same order on every rank
            value = local[key]
            if isinstance(value, torch.Tensor):
                data[key] = _gather_tensor(value, sizes, group)
            else:
                parts: list[Any] = [None] * world
                dist.all_gather_object(parts, list(value), group=group)
                data[key] = [item for part in parts for item in part]
        offsets = tuple(sum(sizes[:r]) for r in range(world + 1))
        gathered = GatheredBatch(data, offsets, rank)

    if num_generations is not None:
        check_whole_groups(gathered[group_key], num_generations)
    return gathered
