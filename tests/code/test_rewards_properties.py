"""Property tests (hypothesis) on adversarial completions and reward-model answers."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from emotionthinker.labels import LABELS, normalize_label
from models.rewards import (
    CRITERIA,
    TAGS,
    Alphas,
    Scores,
    combined_reward,
    extract_answer,
    format_reward,
    outcome_reward,
    parse_reward_scores,
    reasoning_reward,
)

WORDS = list(LABELS) + ["joy", "calm", "disgust", "HAPPY", "Sad.", "or", "not", "neutral-ish", "情绪", "ünï", "😀"]
# Pieces an adversarial policy could emit: tags (also near misses), labels, whitespace, any unicode.
fragment = st.one_of(
    st.sampled_from(TAGS + ("<Think>", "</ answer>", "<answer >", "<think/>", "<", ">", "/")),
    st.sampled_from(WORDS),
    st.sampled_from([" ", "\n", "\t", "\u00a0", "\u2003", ""]),
    st.text(max_size=12),
)
completion = st.lists(fragment, max_size=12).map("".join)
gold_label = st.sampled_from(LABELS)


@st.composite
def near_valid(draw) -> str:
    """A well-formed completion (think block, then an answer naming a label or a near miss), then maybe one
    fragment spliced in anywhere: random fragments alone almost never form the structure the guards test."""
    answer = draw(st.one_of(gold_label, st.sampled_from(WORDS)))
    text = f"<think>{draw(st.text(max_size=20))}</think>{draw(st.sampled_from(['', ' ', chr(10)]))}<answer>{answer}</answer>"
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(fragment) + text[at:]
    return text


any_completion = st.one_of(completion, near_valid())
tag_free = st.text(max_size=40).filter(lambda t: not any(tag in t for tag in TAGS))
non_blank = tag_free.filter(lambda t: t.strip() != "")
blank = st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=3)


@settings(max_examples=400)
@given(any_completion, gold_label)
def test_rewards_are_binary_and_never_raise(c, gold):
    assert format_reward(c) in (0.0, 1.0)
    assert outcome_reward(c, gold) in (0.0, 1.0)


@settings(max_examples=400)
@given(any_completion)
def test_at_most_one_label_is_ever_rewarded(c):
    rewarded = [g for g in LABELS if outcome_reward(c, g) == 1.0]
    assert len(rewarded) <= 1
    if rewarded:  # and only the label the single answer block names
        assert normalize_label(extract_answer(c)) == rewarded[0]
        assert c.count("<answer>") == 1 and c.count("</answer>") == 1


@settings(max_examples=400)
@given(any_completion)
def test_formatted_completions_have_the_exact_structure(c):
    if format_reward(c) == 1.0:
        assert all(c.count(tag) == 1 for tag in TAGS)
        body = c.strip()
        assert body.startswith("<think>") and body.endswith("</answer>")
        assert extract_answer(c) is not None and extract_answer(c) != ""


@given(non_blank, non_blank, blank, blank, blank)
def test_exact_structure_always_earns_the_format_reward(think, answer, pre, mid, post):
    assert format_reward(f"{pre}<think>{think}</think>{mid}<answer>{answer}</answer>{post}") == 1.0


MUTATIONS = {
    "drop_think": lambda t, a: f"<answer>{a}</answer>",
    "drop_answer": lambda t, a: f"<think>{t}</think>",
    "reorder": lambda t, a: f"<answer>{a}</answer><think>{t}</think>",
    "duplicate_answer": lambda t, a: f"<think>{t}</think><answer>{a}</answer><answer>{a}</answer>",
    "duplicate_think": lambda t, a: f"<think>{t}</think><think>{t}</think><answer>{a}</answer>",
    "nest_answer": lambda t, a: f"<think>{t}<answer>{a}</answer></think>",
    "nest_think": lambda t, a: f"<think><think>{t}</think></think><answer>{a}</answer>",
    "unclosed": lambda t, a: f"<think>{t}</think><answer>{a}",
    "empty_think": lambda t, a: f"<think> </think><answer>{a}</answer>",
}


@given(non_blank, non_blank, st.sampled_from(sorted(MUTATIONS)))
def test_broken_structure_never_earns_the_format_reward(think, answer, mutation):
    assert format_reward(MUTATIONS[mutation](think, answer)) == 0.0


@given(non_blank, non_blank, st.text(min_size=1, max_size=20).filter(lambda t: t.strip() != ""), st.booleans())
def test_text_outside_the_blocks_costs_the_format_reward(think, answer, extra, before):
    c = f"<think>{think}</think><answer>{answer}</answer>"
    assert format_reward(extra + c if before else c + extra) == 0.0


@given(gold_label, gold_label, blank, blank, st.sampled_from([str.lower, str.upper, str.title]))
def test_outcome_is_one_exactly_for_the_gold_label(gold, said, pad_left, pad_right, case):
    c = f"<think>reasoning</think><answer>{pad_left}{case(said)}{pad_right}</answer>"
    assert outcome_reward(c, gold) == (1.0 if said == gold else 0.0)


@given(gold_label, st.lists(gold_label, min_size=2, max_size=3, unique=True))
def test_listing_several_labels_never_pays(gold, said):
    one_block = "<think>r</think><answer>" + ", ".join(said) + "</answer>"
    many_blocks = "<think>r</think>" + "".join(f"<answer>{s}</answer>" for s in said)
    assert outcome_reward(one_block, gold) == 0.0
    assert outcome_reward(many_blocks, gold) == 0.0


score = st.integers(1, 5) | st.floats(1.0, 5.0)
score_dict = st.fixed_dictionaries({c: score for c in CRITERIA})


@given(score_dict, st.text(max_size=30).filter(lambda t: "{" not in t), st.text(max_size=30),
       st.booleans(), st.booleans())
def test_valid_scores_parse_whatever_surrounds_them(scores, prefix, suffix, fenced, as_strings):
    body = json.dumps({k: str(v) if as_strings else v for k, v in scores.items()})
    if fenced:
        body = f"```json\n{body}\n```"
    parsed = parse_reward_scores(prefix + body + suffix)
    assert parsed == Scores(*(float(scores[c]) for c in CRITERIA))


@settings(max_examples=300)
@given(st.one_of(
    st.text(max_size=200),
    # all four criteria present, in range or not: the case where the parser must decide, not just give up
    st.fixed_dictionaries({c: st.one_of(*[st.integers(1, 5)] * 3, st.integers(-2, 8), st.floats(0.0, 6.0))
                           for c in CRITERIA}).map(json.dumps),
    st.dictionaries(st.sampled_from(CRITERIA + ("other",)), st.one_of(
        st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
        st.booleans(), st.none())).map(json.dumps),
))
def test_parser_never_raises_and_only_returns_scores_in_range(text):
    parsed = parse_reward_scores(text)
    if parsed is not None:
        assert all(1.0 <= v <= 5.0 for v in parsed.as_tuple())


weights = st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4).filter(lambda w: sum(w) > 1e-3).map(
    lambda w: {c: x / sum(w) for c, x in zip(CRITERIA, w)}
)


@given(st.builds(Scores, score, score, score, score), weights, st.floats(0.0, 1.0), st.floats(0.0, 1.0),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_reasoning_and_combined_rewards_stay_within_bounds(scores, w, tau, fallback, a_t, rf):
    rt = reasoning_reward(scores, w)
    assert 0.2 - 1e-9 <= rt <= 1.0 + 1e-9
    assert reasoning_reward(None, w, fallback=fallback) == fallback
    alphas = Alphas(0.3, 1.0, a_t)
    total = combined_reward(float(rf >= 0.5), 1.0, rt, tau, alphas)
    assert 0.0 <= total <= alphas.format + alphas.outcome + alphas.reasoning + 1e-9
