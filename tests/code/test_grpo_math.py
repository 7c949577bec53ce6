"""GRPO-PTR arithmetic: trust weight, advantages, clipped objective, k3 KL, progressive schedule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emotionthinker.config import load_config
from models.grpo_math import (
    ProgressiveSchedule,
    clipped_policy_loss,
    group_advantages,
    group_statistics,
    group_trust,
    grpo_loss,
    k3_kl,
    ptr_rewards,
    sequence_mean,
    trust_weights,
)
from models.rewards import Alphas

T = torch.tensor


# -- trust weight ----------------------------------------------------------------------------------
def test_trust_weight_paper_example():
    # correct R_t {0.8, 0.6}, wrong {0.9}: c = 0.7, w = 0.9, tau = exp(0.7 - 0.9) = exp(-0.2)
    trust = group_trust(T([0.8, 0.6, 0.9]), T([True, True, False]), T([7, 7, 7]))
    assert trust.correct_mean.item() == pytest.approx(0.7)
    assert trust.wrong_mean.item() == pytest.approx(0.9)
    assert trust.tau.tolist() == pytest.approx([math.exp(-0.2)] * 3)


def test_trust_is_one_when_correct_reasoning_scores_at_least_as_high():
    assert trust_weights(T([0.9, 0.5, 0.7]), T([1, 0, 0]), T([0, 0, 0])).tolist() == [1.0, 1.0, 1.0]
    assert trust_weights(T([0.5, 0.5]), T([1, 0]), T([0, 0])).tolist() == [1.0, 1.0]  # c == w


def test_trust_with_one_side_empty_takes_the_configured_value():
    rt, ids = T([0.2, 0.9, 0.4, 0.3]), T([0, 0, 1, 1])
    all_correct_then_all_wrong = T([True, True, False, False])
    assert trust_weights(rt, all_correct_then_all_wrong, ids).tolist() == [1.0] * 4
    assert trust_weights(rt, all_correct_then_all_wrong, ids, empty_value=0.5).tolist() == [0.5] * 4
    trust = group_trust(rt, all_correct_then_all_wrong, ids)
    assert math.isnan(trust.wrong_mean[0]) and math.isnan(trust.correct_mean[1])


def test_trust_per_group_with_interleaved_string_ids():
    # group "a": correct {0.4}, wrong {0.6, 0.8} -> exp(0.4 - 0.7); group "b": correct {0.9}, wrong {0.1} -> 1
    rt = T([0.4, 0.9, 0.6, 0.1, 0.8])
    correct = T([1, 1, 0, 0, 0])
    ids = ["a", "b", "a", "b", "a"]
    expected = [math.exp(-0.3), 1.0, math.exp(-0.3), 1.0, math.exp(-0.3)]
    assert trust_weights(rt, correct, ids).tolist() == pytest.approx(expected)
    assert group_trust(rt, correct, ids).group_tau.tolist() == pytest.approx([math.exp(-0.3), 1.0])


def test_trust_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="rt"):
        trust_weights(T([[0.1, 0.2]]), T([1, 0]), T([0, 0]))
    with pytest.raises(ValueError, match="correct"):
        trust_weights(T([0.1, 0.2]), T([1]), T([0, 0]))
    with pytest.raises(ValueError, match="group_ids"):
        trust_weights(T([0.1, 0.2]), T([1, 0]), T([0]))


def test_ptr_rewards_by_hand():
    rf, ro, rt = T([1.0, 1.0, 0.0, 1.0]), T([1.0, 1.0, 0.0, 0.0]), T([0.8, 0.6, 0.9, 0.9])
    ids = T([3, 3, 3, 5])
    rewards, trust = ptr_rewards(rf, ro, rt, ids, Alphas(0.3, 1.0, 0.5))
    tau = math.exp(-0.2)  # group 3 as in the paper example; group 5 has no correct completion -> 1
    expected = [0.3 + 1.0 + 0.5 * tau * 0.8, 0.3 + 1.0 + 0.5 * tau * 0.6, 0.5 * tau * 0.9, 0.3 + 0.5 * 0.9]
    assert rewards.tolist() == pytest.approx(expected)
    assert trust.tau.tolist() == pytest.approx([tau, tau, tau, 1.0])
    untrusted, _ = ptr_rewards(rf, ro, rt, ids, Alphas(0.3, 1.0, 0.5), use_trust=False)
    assert untrusted.tolist() == pytest.approx([1.7, 1.6, 0.45, 0.75])


# -- advantages ------------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    # group 0: mean 2, unbiased std 1; group 1: all equal -> 0; group 2: alone -> 0
    adv = group_advantages(T([1.0, 2.0, 3.0, 5.0, 5.0, 9.0]), T([0, 0, 0, 1, 1, 2]))
    d = 1 / (1 + 1e-4)
    assert adv.tolist() == pytest.approx([-d, 0.0, d, 0.0, 0.0, 0.0])
    assert group_advantages(T([1.0, 2.0, 3.0]), T([0, 0, 0]), scale=False).tolist() == [-1.0, 0.0, 1.0]


def test_group_advantages_match_torch_std_per_group():
    torch.manual_seed(0)
    rewards = torch.rand(24)
    ids = torch.arange(6).repeat_interleave(4)
    grouped = rewards.view(6, 4)
    reference = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, ids), reference.reshape(-1))
    stats = group_statistics(rewards, ids)
    torch.testing.assert_close(stats.std.float(), grouped.std(1).repeat_interleave(4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0, 2), st.booleans()), min_size=1, max_size=24), st.randoms())
def test_statistics_are_exactly_invariant_to_batch_order(rows, rnd):
    ids = T([r[0] for r in rows])
    rewards = T([r[1] for r in rows], dtype=torch.float32)
    correct = T([r[2] for r in rows])
    perm = list(range(len(rows)))
    rnd.shuffle(perm)
    p = T(perm)
    assert torch.equal(group_advantages(rewards, ids)[p], group_advantages(rewards[p], ids[p]))
    assert torch.equal(trust_weights(rewards / 2, correct, ids)[p], trust_weights(rewards[p] / 2, correct[p], ids[p]))
    tau = trust_weights(rewards / 2, correct, ids)
    assert bool(((tau > 0) & (tau <= 1)).all())


# -- objective -------------------------------------------------------------------------------------
def test_k3_kl_by_hand_and_unbiased():
    # logp = log 0.5, ref = log 0.25: exp(log 0.5) - log 0.5 - 1 = 0.5 + ln 2 - 1
    assert k3_kl(T([math.log(0.5)]), T([math.log(0.25)])).item() == pytest.approx(math.log(2) - 0.5)
    assert k3_kl(T([-1.3, -0.2]), T([-1.3, -0.2])).tolist() == [0.0, 0.0]
    # E_{x~p}[k3] = KL(p || ref) exactly
    p = torch.distributions.Categorical(probs=T([0.6, 0.3, 0.1], dtype=torch.float64))
    ref = torch.distributions.Categorical(probs=T([0.2, 0.5, 0.3], dtype=torch.float64))
    expected_k3 = (p.probs * k3_kl(p.logits, ref.logits)).sum()
    assert expected_k3.item() == pytest.approx(torch.distributions.kl_divergence(p, ref).item())


@given(st.floats(-30, 0), st.floats(-30, 0))
def test_k3_kl_is_never_negative(logp, ref):
    assert k3_kl(T([logp], dtype=torch.float64), T([ref], dtype=torch.float64)).item() >= 0.0


def test_clipped_policy_loss_by_hand():
    eps = 0.2
    old = torch.zeros(4, 1)
    new = torch.log(T([[1.5], [1.5], [0.5], [0.5]]))
    adv = T([1.0, -1.0, 1.0, -1.0])
    mask = torch.ones(4, 1)
    # per sequence: -min(1.5, 1.2) = -1.2; -min(-1.5, -1.2) = 1.5; -min(0.5, 0.8) = -0.5; -min(-0.5, -0.8) = 0.8
    assert clipped_policy_loss(new, old, adv, mask, eps).item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    out = grpo_loss(new, old, adv, mask, epsilon=eps, beta=0.0)
    assert out.clip_fraction.item() == pytest.approx(0.5)  # rows 0 and 3 are clipped


def test_loss_is_a_mean_per_sequence_then_over_sequences_and_ignores_padding():
    per_token = T([[1.0, 9.0, 9.0], [2.0, 4.0, 6.0]])
    mask = T([[1, 0, 0], [1, 1, 1]])
    assert sequence_mean(per_token, mask).item() == pytest.approx((1.0 + 4.0) / 2)
    old = torch.zeros(2, 3)
    new = T([[0.1, 50.0, -50.0], [0.05, -0.05, 0.0]])  # huge ratios only at padded positions
    padded = clipped_policy_loss(new, old, T([1.0, 1.0]), mask, 0.2)
    clean = clipped_policy_loss(new * mask, old, T([1.0, 1.0]), mask, 0.2)
    assert padded.item() == pytest.approx(clean.item())


def test_policy_gradient_at_ratio_one():
    # d loss / d logp_t = -A_i / (|o_i| * B) for each unmasked token when new == old
    new = torch.zeros(2, 3, requires_grad=True)
    mask = T([[1, 1, 0], [1, 1, 1]])
    clipped_policy_loss(new, torch.zeros(2, 3), T([2.0, -1.0]), mask, 0.2).backward()
    expected = T([[-2 / 4, -2 / 4, 0.0], [1 / 6, 1 / 6, 1 / 6]])
    torch.testing.assert_close(new.grad, expected)


def test_grpo_loss_adds_beta_times_kl():
    torch.manual_seed(1)
    new, old, ref = (torch.randn(3, 5) * 0.1 - 1 for _ in range(3))
    mask = torch.ones(3, 5)
    mask[0, 3:] = 0
    adv = T([0.5, -1.0, 0.2])
    out = grpo_loss(new, old, adv, mask, epsilon=0.2, beta=0.04, logp_ref=ref)
    assert out.kl.item() == pytest.approx(sequence_mean(k3_kl(new, ref), mask).item())
    assert out.loss.item() == pytest.approx(out.policy_loss.item() + 0.04 * out.kl.item())
    assert out.kl.item() > 0
    with pytest.raises(ValueError, match="logp_ref"):
        grpo_loss(new, old, adv, mask, epsilon=0.2, beta=0.04)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(new, old, adv[:2], mask, epsilon=0.2, beta=0.0)


# -- progressive schedule --------------------------------------------------------------------------
def test_progressive_schedule_switches_once_the_window_mean_holds():
    s = ProgressiveSchedule(threshold=0.5, window=3)
    accuracies = [0.2, 0.9, 0.3, 0.6, 0.7, 0.1, 0.0]
    # window means from step 3: 0.467, 0.6 -> on at step 4, and on for good despite later drops
    on = [s.update(step, acc) for step, acc in enumerate(accuracies, start=1)]
    assert on == [False, False, False, True, True, True, True]
    assert s.switch_step == 4


def test_progressive_schedule_needs_a_full_window():
    s = ProgressiveSchedule(threshold=0.5, window=3)
    assert [s.update(i, 1.0) for i in range(3)] == [False, False, True]


def test_schedule_modes_and_config():
    always, never = ProgressiveSchedule(mode="always"), ProgressiveSchedule(mode="never")
    assert [always.update(i, 0.0) for i in (10, 11)] == [True, True] and always.switch_step == 10
    assert [never.update(i, 1.0) for i in range(20)] == [False] * 20 and never.switch_step is None
    for env, mode in [({}, "progressive"), ({"ET_GRPO__NO_PROGRESSIVE": "true"}, "always"),
                      ({"ET_GRPO__PLAIN_GRPO": "true", "ET_GRPO__NO_PROGRESSIVE": "true"}, "never")]:
        grpo = load_config("test", environ=env).grpo
        schedule = ProgressiveSchedule.from_config(grpo)
        assert (schedule.mode, schedule.window, schedule.threshold) == (mode, 2, 0.5)


def test_schedule_resumes_mid_window():
    accuracies = [0.4, 0.4, 0.7, 0.4, 0.8]
    straight = ProgressiveSchedule(threshold=0.55, window=3)
    for step, acc in enumerate(accuracies):
        straight.update(step, acc)
    first = ProgressiveSchedule(threshold=0.55, window=3)
    for step, acc in enumerate(accuracies[:3]):
        first.update(step, acc)
    resumed = ProgressiveSchedule(threshold=0.55, window=3)
    resumed.load_state_dict(first.state_dict())
    for step, acc in enumerate(accuracies[3:], start=3):
        resumed.update(step, acc)
    assert resumed.switch_step == straight.switch_step == 4
    with pytest.raises(ValueError, match="saved with"):
        ProgressiveSchedule(threshold=0.6, window=3).load_state_dict(first.state_dict())


def test_schedule_rejects_bad_input():
    s = ProgressiveSchedule()
    s.update(5, 0.5)
    with pytest.raises(ValueError, match="increase"):
        s.update(5, 0.5)
    with pytest.raises(ValueError, match="accuracy"):
        s.update(6, 1.5)
    with pytest.raises(ValueError):
        ProgressiveSchedule(window=0)
