"""GRPO-PTR reward components as small pure functions (DESIGN.md stage 7).

R_f  format reward     1 iff the whole completion is exactly <think>...</think><answer>...</answer>
R_o  outcome reward    1 iff the answer normalises to the gold label
R_t  reasoning reward  sum_j w_j * g_j / 5 from the reward model's four 1-5 scores
R    combined          a_f R_f + a_o R_o + a_t * tau * R_t  (tau: trust weight, models/grpo_math.py)

Every function here takes strings or numbers and never raises on model output: a policy or a
reward model can emit anything, and one odd completion must not stop a training step.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, TypeVar

from emotionthinker.labels import normalize_label

CRITERIA: tuple[str, ...] = (
    "factual_alignment",
    "interpretative_quality",
    "caption_completeness",
    "fluency_and_structural_clarity",
)
SCORE_MIN, SCORE_MAX = 1.0, 5.0
TAGS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

_ANSWER_RE = re.compile(r"<answer>(?P<answer>.*?)</answer>", re.DOTALL)


def _has_tag(text: str) -> bool:
    return any(tag in text for tag in TAGS)


def format_reward(completion: str) -> float:
    """1.0 iff the completion is exactly ``<think>R</think><answer>A</answer>``, else 0.0.

    Each of the four tags occurs exactly once and in that order (so nothing is nested, duplicated
    or reordered); only whitespace may stand before, between and after the two blocks (models
    often emit a newline there); tags are case-sensitive; R and A must not be blank: an empty think
    block is no reasoning and an empty answer no answer.
    """
    if not isinstance(completion, str) or any(completion.count(tag) != 1 for tag in TAGS):
        return 0.0
    open_t, close_t, open_a, close_a = (completion.index(tag) for tag in TAGS)
    if not open_t < close_t < open_a < close_a:
        return 0.0
    before, after = completion[:open_t], completion[close_a + len("</answer>") :]
    between = completion[close_t + len("</think>") : open_a]
    think = completion[open_t + len("<think>") : close_t]
    answer = completion[open_a + len("<answer>") : close_a]
    blank_outside = not (before + between + after).strip()
    return 1.0 if blank_outside and think.strip() and answer.strip() else 0.0


def extract_answer(completion: str) -> str | None:
    """The text inside the one ``<answer>...</answer>`` block, stripped; None when ambiguous.

    A completion with zero or several answer tags, or tags inside the answer, has no answer: a
    policy must not earn the outcome reward by listing several labels. A missing think block does
    not matter here (the format reward judges that).
    """
    if not isinstance(completion, str):
        return None
    if completion.count("<answer>") != 1 or completion.count("</answer>") != 1:
        return None
    m = _ANSWER_RE.search(completion)
    if m is None:  # the closing tag comes first
        return None
    answer = m.group("answer")
    if _has_tag(answer):
        return None
    return answer.strip()


def outcome_reward(completion: str, gold: str) -> float:
    """1.0 iff the answer normalises (labels.normalize_label) to the same label as ``gold``."""
    predicted = normalize_label(extract_answer(completion))
    gold_label = normalize_label(gold) if isinstance(gold, str) else None
    if gold_label is None:
        raise ValueError(f"gold label {gold!r} is not one of the label space")
    return 1.0 if predicted == gold_label else 0.0


@dataclass(frozen=True)
class Scores:
    """The reward model's four reasoning scores, each in [1, 5]."""

    factual_alignment: float
    interpretative_quality: float
    caption_completeness: float
    fluency_and_structural_clarity: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return tuple(getattr(self, c) for c in CRITERIA)  # type: ignore[return-value]


_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*")
_MAX_PARSE_CHARS = 20_000  # a reward model answer is ~100 characters; bound the work on runaway output
_MAX_CANDIDATES = 64


def _key(name: str) -> str:
    # "Factual Alignment", "factual-alignment" and "FACTUAL_ALIGNMENT" name the same criterion.
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _score_value(value: Any) -> float | None:
    if isinstance(value, bool):  # True is an int in Python, never a score
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number) or not SCORE_MIN <= number <= SCORE_MAX:
        return None
    return number


def _json_objects(text: str):
    """Yield each JSON object that starts at some '{' of text, outermost first."""
    decoder = json.JSONDecoder()
    start, seen = text.find("{"), 0
    while start != -1 and seen < _MAX_CANDIDATES:
        seen += 1
        try:
            obj, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            yield obj
        start = text.find("{", start + 1)


def parse_reward_scores(text: str) -> Scores | None:
    """Parse the reward model's JSON answer; None when it holds no valid set of four scores.

    Tolerates code fences, prose around the JSON, key spelling ("Factual Alignment"), extra keys,
    a wrapping object and numbers written as strings. The first JSON object that names all four
    criteria decides: a missing criterion, a value outside [1, 5], a non-number or a boolean gives
    None rather than a guess. Never raises.
    """
    try:
        if not isinstance(text, str):
            return None
        cleaned = _FENCE_RE.sub("", text[:_MAX_PARSE_CHARS])
        for obj in _json_objects(cleaned):
            fields = {_key(k): v for k, v in obj.items() if isinstance(k, str)}
            if not all(c in fields for c in CRITERIA):
                continue
            values = [_score_value(fields[c]) for c in CRITERIA]
            if any(v is None for v in values):
                return None
            return Scores(*values)  # type: ignore[arg-type]
        return None
    except Exception:  # noqa: BLE001 - a reward model's output must never stop training
        return None


def validate_reasoning_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The four criterion weights, checked: exactly the four criteria, each >= 0, summing to 1."""
    if set(weights) != set(CRITERIA):
        raise ValueError(f"reasoning weights must name exactly {list(CRITERIA)}, got {sorted(weights)}")
    out = {c: float(weights[c]) for c in CRITERIA}
    if any(not math.isfinite(w) or w < 0 for w in out.values()):
        raise ValueError(f"reasoning weights must be finite and >= 0, got {out}")
    if not math.isclose(sum(out.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"reasoning weights must sum to 1, got {sum(out.values())}")
    return out


def reasoning_reward(scores: Scores | None, weights: Mapping[str, float], fallback: float = 0.0) -> float:
    """R_t = sum_j w_j g_j / 5, in [0.2, 1]; ``fallback`` when the reward model gave no valid scores.

    The caller counts fallbacks (a rising count means the reward model stopped answering in JSON).
    """
    if scores is None:
        return float(fallback)
    w = validate_reasoning_weights(weights)
    return sum(w[c] * getattr(scores, c) for c in CRITERIA) / SCORE_MAX


class Alphas(NamedTuple):
    """Weights of the reward components (paper: format 0.3, outcome 1.0, reasoning 0.5)."""

    format: float = 0.3
    outcome: float = 1.0
    reasoning: float = 0.5


Number = TypeVar("Number")


def combined_reward(rf: Number, ro: Number, rt: Number, tau: Number, alphas: Alphas) -> Number:
    """R = a_f R_f + a_o R_o + a_t * tau * R_t; works on floats and element-wise on tensors.

    While R_t is switched off (progressive schedule, plain GRPO) pass alphas with reasoning=0.
    """
    return alphas.format * rf + alphas.outcome * ro + alphas.reasoning * tau * rt  # type: ignore[operator]
