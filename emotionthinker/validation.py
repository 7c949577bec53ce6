"""Great Expectations suites on every table a stage produces, with row-level quarantine.

A suite is a named list of expectations built from the config (`SUITES`).
`validate_table` runs one on a list of records and maps every failing row back
to its record id: a row that breaks an expectation is quarantined with a short
code (`invalid_emotion`, `too_short`, the key of the counts), the offending value
and the expectation as its reason; a table-level failure (a missing column)
quarantines every row. Nothing is dropped silently, and a
failure rate above ``validation.max_failure_rate`` raises `ValidationFailed`
so a flow stops before training on bad data.

Later stages add their suites here (or in ``validation_<stage>.py``) with
`register_suite` and reuse `validate_table` unchanged.

GX is imported lazily: its import costs ~5 s.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from emotionthinker.audio import AudioError, load_audio
from emotionthinker.config import Config
from emotionthinker.errors import StatedStop
from emotionthinker.labels import LABELS
from emotionthinker.records import ManifestRecord, QuarantineRecord, reason_code

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ROW = "_row"  # positional key added to the frame so failing rows map back to records even with a null id
SPLITS = ("train", "validation", "test")
GENDERS = ("male", "female", "unknown")
MANIFEST_REQUIRED = ("id", "audio_path", "corpus", "split", "speaker", "gender", "emotion", "source_label")


class ValidationFailed(StatedStop, RuntimeError):
    """Too many records failed validation: the flow stops before anything downstream uses the data."""

    def __init__(self, stage: str, failure_rate: float, max_rate: float, reasons: Counter) -> None:
        self.stage, self.failure_rate, self.max_rate, self.reasons = stage, failure_rate, max_rate, reasons
        top = ", ".join(f"{r} x{n}" for r, n in reasons.most_common(5))
        super().__init__(
            f"{stage}: {failure_rate:.1%} of records failed validation, above "
            f"validation.max_failure_rate={max_rate:.1%} (most common: {top})"
        )


@dataclass
class ValidationReport:
    """What a validation step accepted and quarantined, with the raw GX results per suite."""

    stage: str
    checked: int
    valid: list[Any]
    quarantined: list[QuarantineRecord]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failure_rate(self) -> float:
        return len(self.quarantined) / self.checked if self.checked else 0.0

    def reasons(self) -> Counter:
        """Counts per reason code."""
        return Counter(reason_code(q.reason) for q in self.quarantined)

    def raise_if_over(self, max_rate: float) -> None:
        if self.failure_rate > max_rate:
            raise ValidationFailed(self.stage, self.failure_rate, max_rate, self.reasons())

    def merged(self, other: "ValidationReport") -> "ValidationReport":
        """Chain a second check run on this report's valid records."""
        quarantined = self.quarantined + other.quarantined
        return ValidationReport(self.stage, self.checked, other.valid, quarantined, {**self.results, **other.results})


# -- suites -------------------------------------------------------------------------
SuiteFactory = Callable[[Config], list[Any]]
SUITES: dict[str, SuiteFactory] = {}


def register_suite(name: str) -> Callable[[SuiteFactory], SuiteFactory]:
    def deco(factory: SuiteFactory) -> SuiteFactory:
        SUITES[name] = factory
        return factory

    return deco


@register_suite("manifest")
def manifest_expectations(cfg: Config) -> list[Any]:
    """Schema, label space, splits, genders, duration bounds, unique ids."""
    import great_expectations.expectations as gxe

    exps: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in MANIFEST_REQUIRED]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("id", "audio_path", "emotion")]
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="emotion", value_set=list(LABELS)),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="gender", value_set=list(GENDERS)),
        # Missing durations are allowed here; the audio check measures them.
        gxe.ExpectColumnValuesToBeBetween(
            column="duration_s", min_value=cfg.audio.min_duration_s, max_value=cfg.audio.max_duration_s
        ),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
    ]
    return exps


def _gx_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig,
    )

    # In memory only: GX's default ephemeral context leaves a temp "docs site" folder behind on every call.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suite(name: str, df: "pd.DataFrame", expectations: Sequence[Any]) -> dict[str, Any]:
    """Validate a DataFrame (with a `_row` column) against expectations; return GX's result as JSON."""
    import great_expectations as gx

    ctx = _gx_context()  # ephemeral and cheap (~ms): a fresh one per call shares no state between threads
    batch = ctx.data_sources.add_pandas(name).add_dataframe_asset("records").add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=[e.copy() for e in expectations]))
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": df},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ROW]},
    )
    return _json_safe(result.to_json_dict())


def _json_safe(obj: Any) -> Any:
    """GX results hold NaN and numpy scalars; make them strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# Range failures the audio loader already names: one code for a short clip, whichever check caught it.
_RANGE_CODES = {"duration_s": ("too_short", "too_long")}


def _reason_code(kind: str, kwargs: Mapping[str, Any], value: Any) -> str:
    """A short code for a failing row (the key of quarantine counts and metrics), e.g. `too_short`."""
    column = kwargs.get("column")
    if kind.endswith("not_be_null"):
        return f"missing_{column}"
    if kind.endswith("be_unique"):
        return f"duplicate_{column}"
    if "value_set" in kwargs:
        return f"invalid_{column}"
    if "min_value" in kwargs or "max_value" in kwargs:
        low, high = _RANGE_CODES.get(column, (f"{column}_too_low", f"{column}_too_high"))
        try:
            below = kwargs.get("min_value") is not None and float(value) < kwargs["min_value"]
        except (TypeError, ValueError):
            return f"invalid_{column}"
        return low if below else high
    return kind.removeprefix("expect_")


def _explain(kind: str, kwargs: Mapping[str, Any], value: Any) -> str:
    column = kwargs.get("column")
    if "value_set" in kwargs:
        return f"{column}={value!r} not in {list(kwargs['value_set'])}"
    if "min_value" in kwargs or "max_value" in kwargs:
        return f"{column}={value!r} outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
    if kind.endswith("not_be_null"):
        return f"{column} is missing"
    if kind.endswith("be_unique"):
        return f"{column}={value!r} is duplicated"
    return f"{column}={value!r} unexpected"


def row_failures(results: Mapping[str, Any], n_rows: int) -> dict[int, list[str]]:
    """Row index -> reasons ("<code>: <details> (<GX expectation>)") from a GX result; table failures hit every row."""
    failures: dict[int, list[str]] = {}
    for res in results.get("results", []):
        if res.get("success"):
            continue
        config = res.get("expectation_config", {})
        kind, kwargs = config.get("type", "expectation"), config.get("kwargs", {})
        result = res.get("result") or {}
        indexes = result.get("unexpected_index_list")
        if indexes:
            column = kwargs.get("column")
            for entry in indexes:
                value = entry.get(column)
                reason = f"{_reason_code(kind, kwargs, value)}: {_explain(kind, kwargs, value)} ({kind})"
                failures.setdefault(int(entry[ROW]), []).append(reason)
            continue
        # Table-level failure (missing column, metric error): no row is trustworthy.
        exc = res.get("exception_info") or {}
        messages = [v.get("exception_message") for v in exc.values() if isinstance(v, dict)]
        messages = messages or [exc.get("exception_message")]
        detail = next((m for m in messages if m), None) or f"{kwargs.get('column', 'table')} failed"
        code = "validation_error"
        if kind == "expect_column_to_exist":
            code, detail = "missing_column", f"column {kwargs.get('column')!r} is missing"
        for i in range(n_rows):
            failures.setdefault(i, []).append(f"{code}: {detail} ({kind})")
    return failures


def _as_dict(rec: Any) -> dict[str, Any]:
    return rec.model_dump(mode="json") if isinstance(rec, BaseModel) else dict(rec)


def validate_table(
    records: Sequence[Any],
    suite: str,
    cfg: Config,
    stage: str = "validate",
    expectations: Sequence[Any] | None = None,
) -> ValidationReport:
    """Run suite `suite` (from SUITES unless expectations are given) on records; quarantine failing rows."""
    import pandas as pd

    exps = list(expectations) if expectations is not None else SUITES[suite](cfg)
    rows = [_as_dict(r) for r in records]
    if not rows:
        return ValidationReport(stage, 0, [], [], {})
    df = pd.DataFrame(rows)
    df[ROW] = range(len(rows))
    results = run_suite(suite, df, exps)
    failures = row_failures(results, len(rows))
    valid, quarantined = [], []
    for i, (rec, row) in enumerate(zip(records, rows)):
        if i in failures:
            quarantined.append(
                QuarantineRecord(
                    id=str(row.get("id") or f"row-{i}"),
                    audio_path=str(row.get("audio_path") or ""),
                    stage=stage,
                    reason="; ".join(sorted(set(failures[i]))),  # sorted: same data, same bytes
                    error_type="ExpectationFailed",
                    suite=suite,
                )
            )
        else:
            valid.append(rec)
    return ValidationReport(stage, len(rows), valid, quarantined, {suite: results})


# -- audio ------------------------------------------------------------------------
def check_audio(
    records: Sequence[ManifestRecord], cfg: Config, stage: str = "validate", workers: int | None = None
) -> ValidationReport:
    """Decode every clip with the platform's loader; an AudioError quarantines the record with its reason.

    A record without a duration gets the decoded one, so downstream stages can rely on it.
    """

    def check(rec: ManifestRecord) -> ManifestRecord | QuarantineRecord:
        try:
            audio = load_audio(rec.audio_path, cfg.audio)
        except AudioError as err:
            return QuarantineRecord(
                id=rec.id, audio_path=rec.audio_path, stage=stage, reason=err.reason,
                error_type=type(err).__name__, detail=err.detail,
            )  # fmt: skip
        if rec.duration_s is None:
            rec = rec.model_copy(update={"duration_s": round(audio.size / cfg.audio.sample_rate, 3)})
        return rec

    workers = workers or min(4, os.cpu_count() or 1)  # decoding and soxr release the GIL
    valid: list[ManifestRecord] = []
    quarantined: list[QuarantineRecord] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for n, out in enumerate(pool.map(check, records), 1):
            (quarantined if isinstance(out, QuarantineRecord) else valid).append(out)
            if n % 500 == 0:
                log.info("audio check: %d/%d clips, %d quarantined", n, len(records), len(quarantined))
    return ValidationReport(stage, len(records), valid, quarantined, {})


def validate_manifest(
    records: Sequence[ManifestRecord], cfg: Config, prior_quarantine: Iterable[QuarantineRecord] = ()
) -> ValidationReport:
    """Manifest suite, then the audio check on the rows that passed it (no clip is decoded in vain).

    `prior_quarantine` (records the adapter already rejected) counts towards the failure rate.
    """
    prior = list(prior_quarantine)
    table = validate_table(records, "manifest", cfg)
    audio = check_audio(table.valid, cfg)
    report = table.merged(audio)
    report.checked += len(prior)
    report.quarantined = prior + report.quarantined
    return report


def results_payload(report: ValidationReport) -> dict[str, Any]:
    """The GX results of every suite with the quarantine reasons: the validation artifact of a run."""
    return {
        "stage": report.stage,
        "checked": report.checked,
        "valid": len(report.valid),
        "quarantined": len(report.quarantined),
        "failure_rate": report.failure_rate,
        "reasons": dict(report.reasons()),
        "suites": report.results,
    }


def save_results(report: ValidationReport, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(results_payload(report), fh, indent=1)
