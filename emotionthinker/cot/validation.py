"""Great Expectations suites for EmotionCoT records and reward-model tuples.

Records are flattened into one row each, with derived columns for what a
column expectation cannot compute (word count, does the target parse, does the
reasoning open with the label, quote the transcript, contradict its own
annotation). The shared ``validate_table`` turns failing rows into quarantine
records with the expectation as reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from emotionthinker.config import Config
from emotionthinker.cot import lexicon as lx
from emotionthinker.cot.checks import fact_check, mentions_transcript, opens_with_label, word_count
from emotionthinker.cot.prompt import CRITERIA
from emotionthinker.cot.records import parse_target
from emotionthinker.labels import LABELS
from emotionthinker.validation import ValidationReport, register_suite, validate_table

SPLITS = ("train", "validation", "test")
WRITERS = ("offline-composer", "openai-compatible")
COT_COLUMNS = ("id", "audio_path", "transcription", "emotion", "reasoning", "target", "speaker", "split", "writer",
               "model", "prompt_version", "pitch_level", "energy_level", "speed_level", "intonation", "gender",
               "age_level")
_TARGET_RE = r"^<think>[\s\S]+</think><answer>(?:" + "|".join(re.escape(lab) for lab in LABELS) + r")</answer>$"


def cot_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One flat row per EmotionCoT record, with the derived check columns."""
    ann = rec.get("annotations") or {}
    prov = rec.get("provenance") or {}
    reasoning = rec.get("reasoning") or ""
    parsed = parse_target(rec.get("target") or "")
    label = rec.get("emotion")
    fc = fact_check(reasoning, rec) if label in LABELS else None
    return {
        "id": rec.get("id"),
        "audio_path": rec.get("audio_path"),
        "transcription": rec.get("transcription"),
        "emotion": label,
        "reasoning": reasoning,
        "target": rec.get("target"),
        "speaker": rec.get("speaker"),
        "split": rec.get("split"),
        "writer": prov.get("writer"),
        "model": prov.get("model"),
        "prompt_version": prov.get("prompt_version"),
        **{k: ann.get(k) for k in ("pitch_level", "energy_level", "speed_level", "intonation", "gender", "age_level")},
        "word_count": word_count(reasoning),
        "target_matches": bool(parsed and parsed[0] == reasoning.strip() and parsed[1] == label),
        "opens_with_label": bool(label in LABELS and opens_with_label(reasoning, label)),
        "mentions_transcript": mentions_transcript(reasoning, rec.get("transcription")),
        "contradicted_claims": fc.n_contradicted if fc else None,
    }


@register_suite("emotion_cot")
def cot_expectations(cfg: Config) -> list[Any]:
    import great_expectations.expectations as gxe

    E = gxe
    exps: list[Any] = [E.ExpectColumnToExist(column=c) for c in COT_COLUMNS]
    exps += [E.ExpectColumnValuesToNotBeNull(column=c) for c in
             ("id", "audio_path", "emotion", "reasoning", "target", "writer", "model", "prompt_version")]
    exps += [
        E.ExpectColumnValuesToBeUnique(column="id"),
        E.ExpectColumnValuesToBeInSet(column="emotion", value_set=list(LABELS)),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        E.ExpectColumnValuesToBeInSet(column="writer", value_set=list(WRITERS)),
        E.ExpectColumnValuesToBeInSet(column="pitch_level", value_set=["low", "normal", "high", "unknown"]),
        E.ExpectColumnValuesToBeInSet(column="energy_level", value_set=["low", "normal", "high", "unknown"]),
        E.ExpectColumnValuesToBeInSet(column="speed_level", value_set=["slow", "normal", "fast", "unknown"]),
        E.ExpectColumnValuesToBeInSet(column="intonation",
                                      value_set=list(lx.INTONATIONS) + sorted(lx.UNDETERMINED_INTONATION)),
        E.ExpectColumnValuesToBeInSet(column="gender", value_set=list(lx.GENDERS)),
        E.ExpectColumnValuesToBeInSet(column="age_level", value_set=list(lx.AGE_LEVELS) + ["unknown"]),
        E.ExpectColumnValuesToBeBetween(column="word_count", min_value=cfg.cot.min_words, max_value=cfg.cot.max_words),
        E.ExpectColumnValuesToMatchRegex(column="target", regex=_TARGET_RE),
        E.ExpectColumnValuesToBeInSet(column="target_matches", value_set=[True]),
        E.ExpectColumnValuesToBeInSet(column="opens_with_label", value_set=[False]),
        E.ExpectColumnValuesToBeInSet(column="mentions_transcript", value_set=[True]),
        # the claim parser found the reasoning asserting a cue value the measurement contradicts
        E.ExpectColumnValuesToBeBetween(column="contradicted_claims", min_value=0, max_value=0),
    ]
    return exps


def rm_row(t: dict[str, Any]) -> dict[str, Any]:
    g = t.get("g") or {}
    row = {"id": t.get("id"), "record_id": t.get("record_id"), "audio_path": (t.get("q") or {}).get("audio_path"),
           "kind": t.get("kind"), "r": t.get("r") or None, "split": t.get("split")}
    for c in CRITERIA:
        row[f"g_{c}"] = g.get(c)
    row["gold_is_perfect"] = t.get("kind") != "gold" or all(g.get(c) == 5 for c in CRITERIA)
    return row


@register_suite("rm_tuples")
def rm_expectations(cfg: Config) -> list[Any]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in ("id", "record_id", "kind", "r")]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("id", "record_id", "r")]
    exps += [gxe.ExpectColumnValuesToBeUnique(column="id"),
             gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["gold", "degraded"]),
             gxe.ExpectColumnValuesToBeInSet(column="gold_is_perfect", value_set=[True])]
    for c in CRITERIA:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=f"g_{c}"))
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=f"g_{c}", value_set=[1, 2, 3, 4, 5]))
    return exps


def _validate(records: Sequence[dict[str, Any]], rows: list[dict[str, Any]], suite: str, cfg: Config,
              stage: str) -> ValidationReport:
    report = validate_table(rows, suite, cfg, stage=stage)
    bad = {q.id for q in report.quarantined}  # validate_table names id-less rows "row-<i>"
    report.valid = [r for i, (r, row) in enumerate(zip(records, rows)) if str(row.get("id") or f"row-{i}") not in bad]
    return report


def validate_cot_records(records: Sequence[dict[str, Any]], cfg: Config) -> ValidationReport:
    """Run the EmotionCoT suite; ``report.valid`` holds the original records that passed."""
    return _validate(records, [cot_row(r) for r in records], "emotion_cot", cfg, "cot")


def validate_rm_tuples(tuples: Sequence[dict[str, Any]], cfg: Config) -> ValidationReport:
    return _validate(tuples, [rm_row(t) for t in tuples], "rm_tuples", cfg, "rm-data")
