"""Held-out evaluation of an SFT model: answer the validation samples and score the answers.

    cot          format rate (models.rewards.format_reward: exactly <think>..</think><answer>..</answer>)
                 and emotion accuracy (models.rewards.outcome_reward against the clip's label)
    attribute    accuracy: the answer names exactly one of the attribute's values, the right one
    comparative  accuracy: the ranks named in the answer, in order, are the rendered order

The attribute and comparative scores accept free phrasing ("The pitch is high.") so an untrained
base model is judged on what it says, not on whether it already knows the answer format.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emotionthinker.audio import load_audio
from emotionthinker.config import Config
from emotionthinker.labels import normalize_label

# Answer vocabularies of the SFT corpus (released EmotionCoT values; comparative ranks first to last).
from emotionthinker.sft_data.prompts import ATTRIBUTE_VALUES, COMPARATIVE_RANKS, ORDER_SEPARATOR
from models.rewards import extract_answer, format_reward, outcome_reward

SCORED_TASKS = ("cot", "attribute", "comparative")


def _mentions(text: str, values: Sequence[str]) -> list[str]:
    """Values named in `text`, in order; whole words only, so 'rising' is not found inside 'rising-falling'."""
    alternatives = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.findall(rf"(?<![\w-])({alternatives})(?![\w-])", text.lower())


def gold_emotion(sample) -> str | None:
    label = normalize_label(sample.meta.get("emotion")) if sample.meta.get("emotion") else None
    return label or normalize_label(extract_answer(sample.target))


def score(sample, text: str) -> dict[str, Any]:
    """Scores of one answer; keys depend on the task (none for unscored tasks such as ASR)."""
    if sample.task == "cot":
        out: dict[str, Any] = {"format": format_reward(text)}
        gold = gold_emotion(sample)
        if gold is not None:
            out["emotion_correct"] = outcome_reward(text, gold)
        return out
    attribute = sample.meta.get("attribute")
    if sample.task == "attribute" and attribute in ATTRIBUTE_VALUES:
        named = set(_mentions(text, ATTRIBUTE_VALUES[attribute]))
        return {"correct": float(named == {sample.target.strip().lower()}), "attribute": attribute}
    if sample.task == "comparative" and attribute in COMPARATIVE_RANKS:
        order = [r.strip().lower() for r in sample.target.split(ORDER_SEPARATOR.strip())]
        return {"correct": float(_mentions(text, COMPARATIVE_RANKS[attribute]) == order), "attribute": attribute}
    return {}


def select_for_eval(samples: Sequence, per_task: int, tasks: Sequence[str] = SCORED_TASKS) -> list:
    """Up to `per_task` samples of each scored task, attributes taken in turn (file order otherwise)."""
    out = []
    for task in tasks:
        by_attribute: dict[str, list] = defaultdict(list)
        for s in samples:
            if s.task == task:
                by_attribute[str(s.meta.get("attribute", ""))].append(s)
        queues = [list(v) for _, v in sorted(by_attribute.items())]
        picked: list = []
        while len(picked) < per_task and any(queues):
            for q in queues:
                if q and len(picked) < per_task:
                    picked.append(q.pop(0))
        out += picked
    return out


def token_budget(task: str, max_new_tokens: int, cfg: Config) -> int:
    """Reasoning gets the full budget; one-word and short-order answers need a few tokens, and a model
    that does not stop (the untrained base) would otherwise decode the full budget for each of them."""
    return max_new_tokens if task == "cot" else min(max_new_tokens, cfg.sft.eval_short_answer_tokens)


def generate_answers(lm, samples: Sequence, cfg: Config, max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers in sample order; batches group samples with the same system prompt and task."""
    answers: dict[int, str] = {}
    groups: dict[tuple[str | None, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[(s.system, s.task)].append(i)
    lm.model.eval()
    for (system, task), idx in groups.items():
        budget = token_budget(task, max_new_tokens, cfg)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            audios = [load_audio(samples[i].audio, cfg.audio) for i in chunk]
            gen = lm.generate(audios, [samples[i].prompt for i in chunk], max_new_tokens=budget, system=system)
            answers.update(zip(chunk, gen.texts))
    return [answers[i] for i in range(len(samples))]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    rows: list[dict[str, Any]]  # per sample: id, task, prompt, target, generated, scores


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    cot = by_task.get("cot", [])
    if cot:
        metrics["cot/n"] = len(cot)
        metrics["cot/format_rate"] = sum(r["format"] for r in cot) / len(cot)
        labelled = [r for r in cot if "emotion_correct" in r]
        if labelled:
            metrics["cot/emotion_accuracy"] = sum(r["emotion_correct"] for r in labelled) / len(labelled)
    for task in ("attribute", "comparative"):
        scored = [r for r in by_task.get(task, []) if "correct" in r]
        if not scored:
            continue
        metrics[f"{task}/n"] = len(scored)
        metrics[f"{task}/accuracy"] = sum(r["correct"] for r in scored) / len(scored)
        per: dict[str, list[float]] = defaultdict(list)
        for r in scored:
            per[r["attribute"]].append(r["correct"])
        for attribute, values in sorted(per.items()):
            metrics[f"{task}/{attribute}_accuracy"] = sum(values) / len(values)
    return metrics


def evaluate(lm, samples: Sequence, cfg: Config) -> EvalResult:
    """Generate and score the selected held-out samples (see select_for_eval)."""
    chosen = select_for_eval(samples, cfg.sft.eval_max_samples)
    texts = generate_answers(lm, chosen, cfg, cfg.sft.eval_max_new_tokens, cfg.sft.eval_batch_size)
    rows = [
        {"id": s.id, "task": s.task, "prompt": s.prompt, "target": s.target, "generated": t, **score(s, t)}
        for s, t in zip(chosen, texts)
    ]
    return EvalResult(summarize(rows), rows)


def sample_generations(lm, samples: Sequence, cfg: Config, n: int) -> list[dict[str, Any]]:
    """A few held-out clips answered, one task after another: the table a person reads after training."""
    chosen = select_for_eval(samples, max(1, n // len(SCORED_TASKS)) if n else 0)[:n]
    if len(chosen) < n:  # fewer scored tasks present: fill with whatever else there is
        seen = {s.id for s in chosen}
        chosen += [s for s in samples if s.id not in seen][: n - len(chosen)]
    texts = generate_answers(lm, chosen, cfg, cfg.sft.eval_max_new_tokens, cfg.sft.eval_batch_size)
    return [{"id": s.id, "task": s.task, "audio": str(s.audio), "prompt": s.prompt, "target": s.target, "generated": t}
            for s, t in zip(chosen, texts)]  # fmt: skip
