"""Reward components on hand-written completions, numbers computed by hand from the paper's formulas."""

from __future__ import annotations

import math

import pytest

from emotionthinker.config import ConfigError, load_config
from emotionthinker.labels import LABELS
from models.rewards import (
    CRITERIA,
    Alphas,
    Scores,
    combined_reward,
    extract_answer,
    format_reward,
    outcome_reward,
    parse_reward_scores,
    reasoning_reward,
    validate_reasoning_weights,
)

GOOD = "<think>The pitch is high and the speech fast, so the speaker sounds excited.</think><answer>happy</answer>"
EQUAL = dict.fromkeys(CRITERIA, 0.25)


@pytest.mark.parametrize(
    "completion",
    [
        GOOD,
        "  \n" + GOOD + "\n",
        "<think>reasoning</think>\n<answer>sad</answer>",
        "<think>\nmulti\nline ünïcödé 情绪\n</think><answer> Contempt or Disgust </answer>",
        "<think>r</think><answer>not a label at all</answer>",  # format is judged apart from the label
    ],
)
def test_format_reward_accepts_exact_structure(completion):
    assert format_reward(completion) == 1.0


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "happy",
        "<answer>happy</answer>",  # no think block
        "<think>reasoning</think>",  # no answer block
        "<think>reasoning</think><answer>happy</answer><answer>sad</answer>",  # duplicated answer
        "<think>a</think><think>b</think><answer>happy</answer>",  # duplicated think
        "<answer>happy</answer><think>reasoning</think>",  # reordered
        "<think>reasoning<answer>happy</answer></think>",  # answer nested in think
        "<think>outer <think>inner</think></think><answer>happy</answer>",  # nested think
        "Sure! <think>reasoning</think><answer>happy</answer>",  # text before
        "<think>reasoning</think><answer>happy</answer> Hope this helps.",  # text after
        "<think>reasoning</think> so <answer>happy</answer>",  # text between
        "<think></think><answer>happy</answer>",  # empty reasoning
        "<think>reasoning</think><answer>  </answer>",  # blank answer
        "<THINK>reasoning</THINK><ANSWER>happy</ANSWER>",  # tags are case-sensitive
        "<think>reasoning</think><answer>happy",  # unclosed
        "</think>reasoning<think><answer>happy</answer>",  # closing before opening
    ],
)
def test_format_reward_rejects_anything_else(completion):
    assert format_reward(completion) == 0.0


def test_extract_answer():
    assert extract_answer(GOOD) == "happy"
    assert extract_answer("<answer>  Angry. </answer>") == "Angry."  # no think block: still an answer
    assert extract_answer("no tags") is None
    assert extract_answer("<answer>happy</answer><answer>sad</answer>") is None  # hedging by listing
    assert extract_answer("</answer>happy<answer>") is None
    assert extract_answer("<answer><think>x</think>happy</answer>") is None
    assert extract_answer("<answer></answer>") == ""


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("happy", "happy", 1.0),
        ("  HAPPY. ", "happy", 1.0),
        ("joy", "happy", 1.0),  # synonym
        ("disgust", "contempt or disgust", 1.0),
        ("calm", "neutral", 1.0),
        ("sad", "happy", 0.0),
        ("happy or sad", "happy", 0.0),  # hedged
        ("very happy", "happy", 0.0),  # near miss, not a synonym
        ("", "happy", 0.0),
    ],
)
def test_outcome_reward(answer, gold, expected):
    assert outcome_reward(f"<think>r</think><answer>{answer}</answer>", gold) == expected


def test_outcome_reward_accepts_gold_synonym_and_rejects_unknown_gold():
    assert outcome_reward("<answer>surprise</answer>", "surprised") == 1.0
    with pytest.raises(ValueError, match="boredom"):
        outcome_reward("<answer>neutral</answer>", "boredom")


def test_every_label_rewards_only_itself():
    for gold in LABELS:
        rewarded = [a for a in LABELS if outcome_reward(f"<think>r</think><answer>{a}</answer>", gold) == 1.0]
        assert rewarded == [gold]


RM_JSON = (
    '{"factual_alignment": 4, "interpretative_quality": 5, '
    '"caption_completeness": 3, "fluency_and_structural_clarity": 5}'
)


@pytest.mark.parametrize(
    "text",
    [
        RM_JSON,
        f"```json\n{RM_JSON}\n```",
        f"Here are my scores:\n{RM_JSON}\nThe reasoning is mostly grounded.",
        RM_JSON.replace("4", '"4"').replace("3", '" 3.0 "'),  # numbers as strings
        '{"Factual Alignment": 4, "Interpretative-Quality": 5, "caption_completeness": 3,'
        ' "FLUENCY_AND_STRUCTURAL_CLARITY": 5, "comment": "ok"}',
        '{"scores": ' + RM_JSON + "}",  # wrapped
        '{"note": "first object has no scores"} then ' + RM_JSON,
    ],
)
def test_parse_reward_scores_tolerates_common_wrappers(text):
    assert parse_reward_scores(text) == Scores(4.0, 5.0, 3.0, 5.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no json here",
        "{",
        '{"factual_alignment": 4, "interpretative_quality": 5, "caption_completeness": 3}',  # missing one
        RM_JSON.replace("4", "6"),  # above 5
        RM_JSON.replace("4", "0"),  # below 1
        RM_JSON.replace("4", "-4"),
        RM_JSON.replace("4", "true"),
        RM_JSON.replace("4", "null"),
        RM_JSON.replace("4", '"four"'),
        RM_JSON.replace("4", "NaN"),
        RM_JSON.replace("4", "Infinity"),
        RM_JSON.replace("4", "[4]"),
        RM_JSON.replace("}", ""),  # truncated generation
        "{" * 100_000,
        '{"a": ' * 50_000,  # nesting deeper than the JSON decoder's recursion limit
    ],
)
def test_parse_reward_scores_rejects_invalid(text):
    assert parse_reward_scores(text) is None


def test_parse_reward_scores_bounds_its_work_on_runaway_output():
    # A valid answer followed by megabytes of junk still parses, and quickly.
    assert parse_reward_scores(RM_JSON + " {" * 1_000_000) == Scores(4.0, 5.0, 3.0, 5.0)
    # The deciding object is the first one naming all four criteria: an invalid one is not skipped.
    assert parse_reward_scores(RM_JSON.replace("4", "9") + RM_JSON) is None


def test_parse_reward_scores_never_raises_on_non_strings():
    for junk in (None, 42, b'{"factual_alignment": 5}', ["x"]):
        assert parse_reward_scores(junk) is None  # type: ignore[arg-type]


def test_reasoning_reward_by_hand():
    scores = Scores(4, 5, 3, 5)
    assert reasoning_reward(scores, EQUAL) == pytest.approx((4 + 5 + 3 + 5) / 4 / 5)  # 0.85
    weights = {"factual_alignment": 0.4, "interpretative_quality": 0.3, "caption_completeness": 0.2,
               "fluency_and_structural_clarity": 0.1}
    assert reasoning_reward(scores, weights) == pytest.approx((0.4 * 4 + 0.3 * 5 + 0.2 * 3 + 0.1 * 5) / 5)  # 0.84
    assert reasoning_reward(Scores(5, 5, 5, 5), EQUAL) == pytest.approx(1.0)
    assert reasoning_reward(Scores(1, 1, 1, 1), EQUAL) == pytest.approx(0.2)
    assert reasoning_reward(None, EQUAL, fallback=0.1) == 0.1


@pytest.mark.parametrize(
    "weights",
    [
        {**EQUAL, "factual_alignment": 0.5},  # sums to 1.25
        {**EQUAL, "factual_alignment": -0.25, "interpretative_quality": 0.75},
        {k: v for k, v in EQUAL.items() if k != "fluency_and_structural_clarity"},
        {**EQUAL, "novelty": 0.0},
    ],
)
def test_invalid_reasoning_weights(weights):
    with pytest.raises(ValueError):
        validate_reasoning_weights(weights)
    with pytest.raises(ConfigError, match="reasoning_weights"):
        load_config("test", environ={}, overrides={"grpo": {"reasoning_weights": weights}})


def test_combined_reward_by_hand():
    alphas = Alphas(0.3, 1.0, 0.5)
    # formatted, correct, R_t 0.8 in a group with tau = exp(-0.2): 0.3 + 1.0 + 0.5 * 0.8187 * 0.8
    assert combined_reward(1.0, 1.0, 0.8, math.exp(-0.2), alphas) == pytest.approx(1.3 + 0.4 * math.exp(-0.2))
    assert combined_reward(0.0, 1.0, 0.9, 1.0, alphas) == pytest.approx(1.45)
    assert combined_reward(1.0, 0.0, 0.9, 1.0, Alphas(0.3, 1.0, 0.0)) == pytest.approx(0.3)  # R_t switched off


def test_config_defaults_match_the_paper_and_the_criteria():
    cfg = load_config("paper", environ={})
    g = cfg.grpo
    assert (g.num_generations, g.beta, g.learning_rate, g.max_steps) == (8, 0.04, 1e-6, 3000)
    assert (g.alpha_format, g.alpha_outcome, g.alpha_reasoning) == (0.3, 1.0, 0.5)
    assert tuple(g.reasoning_weights) == CRITERIA
    assert load_config("tiny", environ={}).grpo.num_generations == 4
    assert load_config("test", environ={}).grpo.num_generations == 2
    assert load_config("tiny", environ={"ET_GRPO__PLAIN_GRPO": "true"}).grpo.reasoning_schedule == "never"
    assert load_config("tiny", environ={"ET_GRPO__NO_PROGRESSIVE": "1"}).grpo.reasoning_schedule == "always"
