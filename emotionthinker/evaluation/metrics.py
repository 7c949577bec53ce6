"""Emotion-recognition metrics over (gold, predicted) label pairs, as plain functions.

    uar                unweighted accuracy = mean per-class recall over the classes present in gold
                       (the paper's accuracy; a model cannot gain by favouring frequent classes)
    weighted_accuracy  correct / all clips (every clip weighs the same, so frequent classes weigh more)
    macro_f1           mean F1 over the same classes as uar; predicting a class absent from gold costs
                       recall of the true class but adds no F1 term of its own
    format_rate        share of outputs that are exactly <think>..</think><answer>..</answer>
    answer_rate        share of outputs scored with a label (see evaluation.predict for the free-text
                       fallback of models that do not use the answer tags)
    uar_strict         uar counting only answers inside <answer> tags (the GRPO outcome reward's parse)

A prediction of None (no parsable answer) is a wrong answer for every metric; in the confusion
matrix it gets its own column, NO_ANSWER.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emotionthinker.labels import LABELS

NO_ANSWER = "(no answer)"


class MetricsError(ValueError):
    """Inputs that give no meaningful metric (no clips, gold labels outside the label space, length mismatch)."""


@dataclass
class ConfusionMatrix:
    rows: list[str]  # gold classes present, in LABELS order
    columns: list[str]  # predicted classes seen or gold (LABELS order), then NO_ANSWER when any
    counts: list[list[int]]

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": self.columns, "counts": self.counts}

    def count(self, gold: str, predicted: str | None) -> int:
        return self.counts[self.rows.index(gold)][self.columns.index(predicted or NO_ANSWER)]


@dataclass
class ClassificationMetrics:
    n: int
    uar: float
    weighted_accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # class -> recall, precision, f1, support
    confusion: ConfusionMatrix
    extra: dict[str, float] = field(default_factory=dict)  # format_rate, answer_rate when given

    def scalars(self) -> dict[str, float]:
        """Flat metrics for MLflow: the headline numbers and per-class recall/F1."""
        out = {"n": float(self.n), "uar": self.uar, "weighted_accuracy": self.weighted_accuracy, "macro_f1": self.macro_f1}
        out |= self.extra
        for label, m in self.per_class.items():
            key = label.replace(" ", "_")
            out[f"recall/{key}"] = m["recall"]
            out[f"f1/{key}"] = m["f1"]
        return out


def present_classes(gold: Sequence[str]) -> list[str]:
    unknown = sorted({g for g in gold if g not in LABELS})
    if unknown:
        raise MetricsError(f"gold labels outside the label space: {unknown}")
    seen = set(gold)
    return [label for label in LABELS if label in seen]


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str | None]) -> ConfusionMatrix:
    rows = present_classes(gold)
    seen = set(rows) | {p for p in predicted if p is not None}
    unknown = sorted(seen - set(LABELS))
    if unknown:
        raise MetricsError(f"predicted labels outside the label space: {unknown} (normalise answers first)")
    columns = [label for label in LABELS if label in seen] + ([NO_ANSWER] if any(p is None for p in predicted) else [])
    counts = [[0] * len(columns) for _ in rows]
    for g, p in zip(gold, predicted):
        counts[rows.index(g)][columns.index(p if p is not None else NO_ANSWER)] += 1
    return ConfusionMatrix(rows, columns, counts)


def classification_metrics(
    gold: Sequence[str],
    predicted: Sequence[str | None],
    format_ok: Sequence[bool] | None = None,
) -> ClassificationMetrics:
    """All metrics of the module docstring; gold labels must be LABELS, predictions LABELS or None."""
    if len(gold) != len(predicted) or (format_ok is not None and len(format_ok) != len(gold)):
        raise MetricsError(f"{len(gold)} gold labels, {len(predicted)} predictions"
                           + (f", {len(format_ok)} format flags" if format_ok is not None else ""))  # fmt: skip
    if not gold:
        raise MetricsError("no clips to score")
    cm = confusion_matrix(gold, predicted)
    per_class: dict[str, dict[str, float]] = {}
    for i, label in enumerate(cm.rows):
        support = sum(cm.counts[i])
        tp = cm.counts[i][cm.columns.index(label)]
        n_pred = sum(1 for p in predicted if p == label)
        recall = tp / support
        precision = tp / n_pred if n_pred else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"recall": recall, "precision": precision, "f1": f1, "support": float(support)}
    correct = sum(1 for g, p in zip(gold, predicted) if g == p)
    extra: dict[str, float] = {"answer_rate": sum(p is not None for p in predicted) / len(gold)}
    if format_ok is not None:
        extra["format_rate"] = sum(bool(f) for f in format_ok) / len(gold)
    return ClassificationMetrics(
        n=len(gold),
        uar=sum(m["recall"] for m in per_class.values()) / len(per_class),
        weighted_accuracy=correct / len(gold),
        macro_f1=sum(m["f1"] for m in per_class.values()) / len(per_class),
        per_class=per_class,
        confusion=cm,
        extra=extra,
    )


def metrics_from_rows(rows: Sequence[Mapping[str, Any]]) -> ClassificationMetrics:
    """Metrics of per-clip output rows (keys gold, predicted, format_ok, predicted_strict; see evaluation.predict).

    With `predicted_strict` present, uar_strict (tag-only answers) and text_answer_rate are added.
    """
    has_format = all(r.get("format_ok") not in (None, "") for r in rows)
    m = classification_metrics(
        [r["gold"] for r in rows],
        [r.get("predicted") or None for r in rows],
        [bool(r["format_ok"]) for r in rows] if has_format else None,
    )
    if rows and all("predicted_strict" in r for r in rows):
        strict = classification_metrics([r["gold"] for r in rows], [r.get("predicted_strict") or None for r in rows])
        m.extra["uar_strict"] = strict.uar
        m.extra["text_answer_rate"] = sum(r.get("answer_source") == "text" for r in rows) / len(rows)
    return m


def confusion_figure(cm: ConfusionMatrix, title: str = ""):
    """Counts in each cell, colour = share of the gold row (so rare classes read as clearly as frequent ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(cm.counts, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.1 + 0.9 * len(cm.columns), 1.0 + 0.6 * len(cm.rows)))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(cm.rows)):
        for j in range(len(cm.columns)):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)  # fmt: skip
    ax.set_xticks(range(len(cm.columns)), [c.replace(" or ", "/\n") for c in cm.columns], rotation=45, ha="right")
    ax.set_yticks(range(len(cm.rows)), cm.rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    fig.tight_layout()
    return fig
