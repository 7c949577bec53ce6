"""GRPO-PTR arithmetic as pure torch functions (DESIGN.md stage 7).

Completions are grouped by ``group_ids`` (one id per prompt, the K completions of that prompt
share it), as verl's ``index``: nothing assumes that a group's completions are adjacent, which
lets the trainer gather groups across processes in any order (models/distributed_groups.py).

Group statistics are order-invariant to the bit: each group's values are sorted and summed in
float64 before the result is cast back, so permuting a batch, or splitting it across processes
and gathering it again, permutes the outputs and changes nothing else. They are computed on the
CPU (a few hundred numbers per step) and returned on the input's device.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Hashable, Literal, NamedTuple, Sequence

import torch

from models.rewards import Alphas, combined_reward

GroupIds = torch.Tensor | Sequence[Hashable]
ADVANTAGE_EPS = 1e-4  # TRL's constant: keeps a zero-spread group's advantages at 0, not NaN


# -- groups ------------------------------------------------------------------------------------
def group_indices(group_ids: GroupIds) -> list[torch.Tensor]:
    """Positions of each group's members, groups in sorted id order (a canonical order)."""
    ids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    positions: dict[Hashable, list[int]] = {}
    for i, g in enumerate(ids):
        positions.setdefault(g, []).append(i)
    order = sorted(positions, key=lambda g: (type(g).__name__, g))
    return [torch.tensor(positions[g], dtype=torch.long) for g in order]


def _check_1d(name: str, x: torch.Tensor, n: int) -> None:
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries (one per completion), got shape {tuple(x.shape)}")


def _sorted_sum(x: torch.Tensor) -> torch.Tensor:
    # Sorting first makes the float64 sum independent of the order the values came in.
    return torch.sort(x.double()).values.sum()


class GroupStatistics(NamedTuple):
    """Per-completion mean and unbiased std of its group, and the group size."""

    mean: torch.Tensor
    std: torch.Tensor  # NaN for a group of one (no spread to measure)
    size: torch.Tensor


def group_statistics(values: torch.Tensor, group_ids: GroupIds) -> GroupStatistics:
    """Mean and unbiased (Bessel, as torch.std in verl and TRL's nanstd) std of each group (on the CPU)."""
    values = values.detach().cpu()
    n = values.shape[0]
    groups = group_indices(group_ids)
    _check_1d("values", values, n)
    if sum(len(g) for g in groups) != n:
        raise ValueError("group_ids must have one entry per value")
    mean = torch.empty(n, dtype=torch.float64)
    std = torch.empty(n, dtype=torch.float64)
    size = torch.empty(n, dtype=torch.long)
    for idx in groups:
        v = values[idx].double()
        m = _sorted_sum(v) / len(idx)
        s = torch.sqrt(_sorted_sum((v - m) ** 2) / (len(idx) - 1)) if len(idx) > 1 else math.nan
        mean[idx], std[idx], size[idx] = m, s, len(idx)
    return GroupStatistics(mean, std, size)


def group_advantages(
    rewards: torch.Tensor, group_ids: GroupIds, eps: float = ADVANTAGE_EPS, scale: bool = True
) -> torch.Tensor:
    """GRPO advantages (r - mean_group) / (std_group + eps); ``scale=False`` gives r - mean_group.

    As TRL (scale_rewards='group'): std is unbiased, eps is added to it, and a group whose rewards
    are all equal gets advantages 0. A group of one completion has no baseline: its advantage is 0
    (TRL yields NaN there; verl uses mean 0, std 1, which rewards it absolutely).
    """
    stats = group_statistics(rewards, group_ids)
    centred = rewards.detach().cpu().double() - stats.mean
    if scale:
        centred = centred / (stats.std + eps)
    centred = torch.where(stats.size > 1, centred, torch.zeros_like(centred))
    return centred.to(device=rewards.device, dtype=rewards.dtype if rewards.is_floating_point() else torch.float32)


# -- trust weight --------------------------------------------------------------------------------
class GroupTrust(NamedTuple):
    """Trust weight per completion plus the per-group numbers behind it (for logging)."""

    tau: torch.Tensor  # per completion
    group_tau: torch.Tensor  # per group, groups in sorted id order
    correct_mean: torch.Tensor  # per group: mean R_t over correct completions (NaN when none)
    wrong_mean: torch.Tensor  # per group: mean R_t over wrong completions (NaN when none)


def group_trust(
    rt: torch.Tensor, correct: torch.Tensor, group_ids: GroupIds, empty_value: float = 1.0
) -> GroupTrust:
    """Trust weight of each group: c, w = mean R_t over correct / wrong completions;
    tau = 1 if c >= w else exp(c - w); tau = ``empty_value`` when either set is empty.

    A reward model that scores wrong answers' reasoning above right answers' is not to be trusted
    for that prompt, and its R_t is damped by how far it is off.
    """
    n = rt.shape[0]
    _check_1d("rt", rt, n)
    _check_1d("correct", correct, n)
    device = rt.device
    rt, correct = rt.detach().cpu(), correct.detach().cpu().bool()
    groups = group_indices(group_ids)
    if sum(len(g) for g in groups) != n:
        raise ValueError("group_ids must have one entry per completion")
    tau = torch.empty(n, dtype=torch.float64)
    group_tau, c_means, w_means = [], [], []
    for idx in groups:
        r, ok = rt[idx].double(), correct[idx]
        c = _sorted_sum(r[ok]) / ok.sum() if ok.any() else torch.tensor(math.nan, dtype=torch.float64)
        w = _sorted_sum(r[~ok]) / (~ok).sum() if (~ok).any() else torch.tensor(math.nan, dtype=torch.float64)
        if not (ok.any() and (~ok).any()):
            t = torch.tensor(float(empty_value), dtype=torch.float64)
        else:
            t = torch.where(c >= w, torch.ones((), dtype=torch.float64), torch.exp(c - w))
        tau[idx] = t
        group_tau.append(t)
        c_means.append(c)
        w_means.append(w)
    dtype = rt.dtype if rt.is_floating_point() else torch.float32

    def out(x: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = x if isinstance(x, torch.Tensor) else torch.stack(x) if x else torch.empty(0)
        return x.to(device=device, dtype=dtype)

    return GroupTrust(out(tau), out(group_tau), out(c_means), out(w_means))


def trust_weights(
    rt: torch.Tensor, correct: torch.Tensor, group_ids: GroupIds, empty_value: float = 1.0
) -> torch.Tensor:
    """tau per completion (see group_trust)."""
    return group_trust(rt, correct, group_ids, empty_value).tau


def ptr_rewards(
    rf: torch.Tensor,
    ro: torch.Tensor,
    rt: torch.Tensor,
    group_ids: GroupIds,
    alphas: Alphas,
    *,
    use_trust: bool = True,
    empty_value: float = 1.0,
) -> tuple[torch.Tensor, GroupTrust]:
    """R_i = a_f R_f + a_o R_o + a_t tau R_t for a batch of WHOLE groups; also returns the trust.

    ``use_trust=False`` is the paper's no-trust-weight ablation (tau = 1 in the reward; the trust
    numbers are still returned for logging). Correct means R_o = 1.
    """
    trust = group_trust(rt, ro > 0.5, group_ids, empty_value)
    tau = trust.tau if use_trust else torch.ones_like(trust.tau)
    return combined_reward(rf, ro, rt, tau, alphas), trust


# -- policy objective ----------------------------------------------------------------------------
def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1 >= 0."""
    delta = logp_ref - logp
    return torch.exp(delta) - delta - 1


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's unmasked tokens, then over sequences (TRL loss_type='grpo').

    This is the GRPO objective as written (1/G sum_i 1/|o_i| sum_t). It is chosen over a token
    mean because each sequence's value depends only on that sequence, so equal-sized local batches
    averaged by DDP give exactly the global objective. Known cost: a length bias (short completions
    with positive advantage are favoured slightly more).
    """
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # policy_loss + beta * kl, to backpropagate
    policy_loss: torch.Tensor
    kl: torch.Tensor  # sequence-mean k3 KL (0 when no reference is given)
    clip_fraction: torch.Tensor  # share of unmasked tokens whose clipped term was active


def _check_token_shapes(logp_new: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, **others) -> None:
    if logp_new.dim() != 2 or mask.shape != logp_new.shape:
        raise ValueError(f"logp and mask must be (batch, tokens) of one shape, got {tuple(logp_new.shape)}, "
                         f"{tuple(mask.shape)}")
    for name, t in others.items():
        if t.shape != logp_new.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(logp_new.shape)}")
    if advantages.reshape(-1).shape[0] != logp_new.shape[0]:
        raise ValueError(f"advantages need one value per sequence ({logp_new.shape[0]}), got {tuple(advantages.shape)}")


def clipped_surrogate(
    logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss -min(rho A, clip(rho, 1-eps, 1+eps) A) and where clipping was active."""
    ratio = torch.exp(logp_new - logp_old)
    adv = advantages.reshape(-1, 1).to(ratio.dtype)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * adv, clipped * adv)
    active = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    return per_token, active


def clipped_policy_loss(
    logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Clipped-ratio policy loss aggregated by ``sequence_mean`` (shapes: (B, T), (B, T), (B,), (B, T))."""
    _check_token_shapes(logp_new, mask, advantages, logp_old=logp_old)
    per_token, _ = clipped_surrogate(logp_new, logp_old, advantages, epsilon)
    return sequence_mean(per_token, mask)


def grpo_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    beta: float,
    logp_ref: torch.Tensor | None = None,
) -> PolicyLoss:
    """Clipped objective plus beta * k3 KL to the frozen reference, both per token then
    ``sequence_mean`` (as TRL adds beta * per_token_kl before aggregating)."""
    _check_token_shapes(logp_new, mask, advantages, logp_old=logp_old)
    per_token, active = clipped_surrogate(logp_new, logp_old, advantages, epsilon)
    policy_loss = sequence_mean(per_token, mask)
    if beta != 0.0 and logp_ref is None:
        raise ValueError("beta != 0 needs the reference model's log-probabilities (logp_ref)")
    if logp_ref is not None:  # with beta = 0 the KL is still worth logging
        _check_token_shapes(logp_new, mask, advantages, logp_ref=logp_ref)
        kl = sequence_mean(k3_kl(logp_new, logp_ref), mask)
    else:
        kl = torch.zeros((), dtype=policy_loss.dtype)
    m = mask.bool()
    clip_fraction = (active & m).sum() / m.sum().clamp(min=1)
    return PolicyLoss(policy_loss + beta * kl, policy_loss, kl, clip_fraction.to(policy_loss.dtype))


# -- progressive schedule ------------------------------------------------------------------------
ScheduleMode = Literal["progressive", "always", "never"]


class ProgressiveSchedule:
    """When R_t enters the reward.

    ``progressive``: off until the mean training accuracy over the last ``window`` steps reaches
    ``threshold`` (the window must be full), then on for good. A moving average rather than
    "every step of the window" because a step's accuracy comes from a few dozen completions
    and is noisy. ``always``: on from the first step (no-progressive ablation). ``never``: plain
    GRPO. Call ``update`` once per step with that step's accuracy (known from R_o before the
    rewards are combined); it answers whether this step's reward includes R_t.
    """

    def __init__(self, threshold: float = 0.5, window: int = 5, mode: ScheduleMode = "progressive") -> None:
        if mode not in ("progressive", "always", "never"):
            raise ValueError(f"unknown schedule mode {mode!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.threshold, self.window, self.mode = float(threshold), int(window), mode
        self._history: deque[float] = deque(maxlen=self.window)
        self._last_step: int | None = None
        self.switch_step: int | None = None  # first step whose reward included R_t

    @classmethod
    def from_config(cls, grpo: Any) -> "ProgressiveSchedule":
        """From a GrpoConfig (emotionthinker/config.py): plain_grpo -> never, no_progressive -> always."""
        return cls(grpo.progressive_threshold, grpo.progressive_window, grpo.reasoning_schedule)

    @property
    def active(self) -> bool:
        return self.switch_step is not None

    def update(self, step: int, accuracy: float) -> bool:
        if not (isinstance(accuracy, (int, float)) and 0.0 <= accuracy <= 1.0):
            raise ValueError(f"accuracy must be a number in [0, 1], got {accuracy!r}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"steps must increase: got {step} after {self._last_step}")
        self._last_step = step
        self._history.append(float(accuracy))
        if self.switch_step is None:
            if self.mode == "always" or (
                self.mode == "progressive"
                and len(self._history) == self.window
                and math.fsum(self._history) / self.window >= self.threshold
            ):
                self.switch_step = step
        return self.active

    @property
    def window_accuracy(self) -> float | None:
        """Mean accuracy over the current window (None before the first step), for logging."""
        return math.fsum(self._history) / len(self._history) if self._history else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "window": self.window,
            "mode": self.mode,
            "history": list(self._history),
            "last_step": self._last_step,
            "switch_step": self.switch_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore on resume; refuses a state saved under different settings."""
        saved = (state["threshold"], state["window"], state["mode"])
        if saved != (self.threshold, self.window, self.mode):
            raise ValueError(f"schedule state was saved with {saved}, now {(self.threshold, self.window, self.mode)}")
        self._history = deque((float(a) for a in state["history"]), maxlen=self.window)
        self._last_step = state["last_step"]
        self.switch_step = state["switch_step"]
