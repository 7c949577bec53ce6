"""Great Expectations suite for SFT samples, with row-level quarantine.

Checks that hold for every sample: schema, a known task, a non-blank target,
a prompt that starts with the audio placeholder and has exactly one per audio
file, audio files that exist, unique ids. Per task: a CoT target is exactly
``<think>reasoning</think><answer>label</answer>`` with a label of LABELS; an
attribute target is one of the released values; a comparative target names
three distinct ranks of its attribute joined by " -> ". Facts that need Python (placeholder
count, file existence) go into derived columns that the suite then checks, so
the GX result holds every verdict and names the failing rows.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from emotionthinker.config import Config
from emotionthinker.labels import LABELS
from emotionthinker.records import QuarantineRecord
from emotionthinker.sft_data.prompts import ATTRIBUTE_VALUES, AUDIO_TAG, COMPARATIVE_RANKS, ORDER_SEPARATOR
from emotionthinker.sft_data.samples import TASKS
from emotionthinker.stored_paths import resolve_stored_path
from emotionthinker.validation import ROW, ValidationReport, row_failures, run_suite

SUITE = "sft_samples"
REQUIRED = ("id", "task", "audio", "system", "prompt", "target", "source_id")
_LABEL_ALT = "|".join(re.escape(label) for label in LABELS)
_NO_TAG = r"(?!</?think>|</?answer>)"  # no nested or repeated tags inside the reasoning
# One non-space character per repetition, so matching stays linear in the target's length.
COT_TARGET_REGEX = rf"^<think>\s*(?:{_NO_TAG}\S\s*)+</think>\s*<answer>(?:{_LABEL_ALT})</answer>$"


def comparative_regex(attribute: str) -> str:
    """One of the six orders of the attribute's three ranks, joined by ' -> ' (no capture groups: pandas warns)."""
    orders = (ORDER_SEPARATOR.join(p) for p in itertools.permutations(COMPARATIVE_RANKS[attribute]))
    return "^(?:" + "|".join(re.escape(o) for o in orders) + ")$"

MAX_REASON_CHARS = 200  # a failing CoT target would otherwise be copied whole into the reason
MAX_VALUE_CHARS = 60
# What each pattern means, for reasons a person can read ("<regex> unexpected" says nothing).
REGEX_MEANING = {
    r"\S": "non-blank",
    rf"^{re.escape(AUDIO_TAG)}": f"starting with {AUDIO_TAG}",
    COT_TARGET_REGEX: "<think>reasoning</think><answer>label</answer> with a label of LABELS",
    # pitch and energy share one vocabulary, hence one pattern
    **{comparative_regex(a): f"three distinct ranks of {list(r)} joined by ' -> '" for a, r in COMPARATIVE_RANKS.items()},
}


def sft_expectations(cfg: Config) -> list[Any]:
    import great_expectations.expectations as gxe

    def only(task: str, attribute: str | None = None) -> dict[str, str]:
        condition = f'task=="{task}"' + (f' and attribute=="{attribute}"' if attribute else "")
        return {"row_condition": condition, "condition_parser": "pandas"}

    exps: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in REQUIRED]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in REQUIRED]
    exps += [
        gxe.ExpectColumnValuesToBeUnique(column="file_id"),
        gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(TASKS)),
        gxe.ExpectColumnValuesToMatchRegex(column="target", regex=r"\S"),
        gxe.ExpectColumnValuesToMatchRegex(column="prompt", regex=rf"^{re.escape(AUDIO_TAG)}"),
        gxe.ExpectColumnValuesToBeBetween(column="n_audio", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="extra_audio_tags", min_value=0, max_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="missing_audio_files", min_value=0, max_value=0),
        gxe.ExpectColumnValuesToMatchRegex(column="target", regex=COT_TARGET_REGEX, **only("cot")),
        gxe.ExpectColumnValuesToNotBeNull(column="attribute", **only("attribute")),
        gxe.ExpectColumnValuesToNotBeNull(column="attribute", **only("comparative")),
        gxe.ExpectColumnValuesToBeInSet(column="attribute", value_set=list(ATTRIBUTE_VALUES), **only("attribute")),
        gxe.ExpectColumnValuesToBeInSet(column="attribute", value_set=list(COMPARATIVE_RANKS), **only("comparative")),
    ]
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="target", value_set=list(values), **only("attribute", attribute))
        for attribute, values in ATTRIBUTE_VALUES.items()
    ]
    exps += [
        gxe.ExpectColumnValuesToMatchRegex(column="target", regex=comparative_regex(a), **only("comparative", a))
        for a in COMPARATIVE_RANKS
    ]
    return exps


def _derived(sample: dict[str, Any]) -> dict[str, Any]:
    audio = sample.get("audio")
    paths = [str(p) for p in audio] if isinstance(audio, list) else []
    prompt = sample.get("prompt") if isinstance(sample.get("prompt"), str) else ""
    return {
        "n_audio": len(paths),
        "extra_audio_tags": prompt.count(AUDIO_TAG) - len(paths),  # negative: a clip with no placeholder
        "missing_audio_files": sum(not resolve_stored_path(p).is_file() for p in paths) if paths else 1,
        "attribute": meta.get("attribute") if isinstance(meta := sample.get("meta"), dict) else None,
    }


def _shorten(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sample_failures(results: dict[str, Any], n_rows: int) -> dict[int, list[str]]:
    """Row -> reasons; row_failures for everything, with regex failures named by what the pattern means."""
    plain, named = [], []
    for res in results.get("results", []):
        kwargs = res.get("expectation_config", {}).get("kwargs", {})
        indexes = (res.get("result") or {}).get("unexpected_index_list")
        (named if not res.get("success") and indexes and kwargs.get("regex") in REGEX_MEANING else plain).append(res)
    failures = row_failures({"results": plain}, n_rows)
    for res in named:
        config = res["expectation_config"]
        column, regex = config["kwargs"]["column"], config["kwargs"]["regex"]
        for entry in res["result"]["unexpected_index_list"]:
            value = _shorten(repr(entry.get(column)), MAX_VALUE_CHARS)
            failures.setdefault(int(entry[ROW]), []).append(f"{config['type']}: {column}={value} is not {REGEX_MEANING[regex]}")
    return failures


def validate_sft_samples(samples: Sequence[dict[str, Any]], cfg: Config, stage: str = "sft_data") -> ValidationReport:
    """Run the suite on one sample list; failing rows are quarantined with every expectation they broke."""
    return validate_sft_files({stage: samples}, cfg)[stage]


def validate_sft_files(files: Mapping[str, Sequence[dict[str, Any]]], cfg: Config) -> dict[str, ValidationReport]:
    """One GX run over several sample files (a run costs ~1 s whatever its size); ids are unique per file.

    Returns a ValidationReport per file name, whose stage is the file name.
    """
    import pandas as pd

    rows, owners = [], []
    for name, samples in files.items():
        for s in samples:
            row = {k: s.get(k) for k in REQUIRED if k in s}
            row["audio"] = "\n".join(map(str, s["audio"])) if isinstance(s.get("audio"), list) else s.get("audio")
            row["file_id"] = f"{name}/{s.get('id')}"  # one CoT sample may sit in stage1 and stage2 alike
            rows.append({**row, **_derived(s)})
            owners.append((name, s))
    reports = {name: ValidationReport(name, len(samples), [], [], {}) for name, samples in files.items()}
    if not rows:
        return reports
    df = pd.DataFrame(rows)
    df[ROW] = range(len(rows))
    results = run_suite(SUITE, df, sft_expectations(cfg))
    failures = sample_failures(results, len(rows))
    summary = summarize_results(results)
    for report in reports.values():
        report.results = {SUITE: summary}
    for i, (name, s) in enumerate(owners):
        report = reports[name]
        if i not in failures:
            report.valid.append(s)
            continue
        audio = s.get("audio")
        report.quarantined.append(
            QuarantineRecord(
                id=str(s.get("id") or f"row-{i}"),
                audio_path=str(audio[0]) if isinstance(audio, list) and audio else "",
                stage=name,
                reason="; ".join(sorted({_shorten(r) for r in failures[i]})),
                error_type="ExpectationFailed",
                suite=SUITE,
                task=s.get("task"),
                source_id=s.get("source_id"),
            )
        )
    return reports


def summarize_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per expectation: what it checked, whether it passed, how many rows failed. No run ids or times, so
    the same data gives the same bytes (the full GX result is large and differs on every run)."""
    out = []
    for res in results.get("results", []):
        config = res.get("expectation_config", {})
        kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k in ("column", "row_condition", "value_set",
                                                                             "min_value", "max_value", "regex")}
        out.append({"expectation": config.get("type"), **kwargs, "success": bool(res.get("success")),
                    "unexpected_count": (res.get("result") or {}).get("unexpected_count")})
    return {"success": bool(results.get("success")), "expectations": out}
