"""Ingest, as plain functions: corpus -> manifest -> validation with quarantine -> versioned dataset -> MLflow.

The Prefect flow (flows/ingest.py) chains these; tests call them directly.
The dataset written for a corpus is ``<data>/manifests/<corpus>/`` with
``manifest.jsonl`` (valid records), ``manifest.quarantine.jsonl`` (every
rejected file with its stage and reason) and ``summary.json`` (counts,
exclusions). Its content is a pure function of the corpus, so re-ingesting
unchanged data reproduces the same DVC md5.

Counts reconcile: every file the adapter found is a record, a quarantined
record, an exclusion (source label with no counterpart, counted by label) or
a skip (out of scope by design, counted by kind).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotionthinker.config import Config
from emotionthinker.labels import LABELS
from emotionthinker.records import ManifestRecord, write_jsonl
from emotionthinker.stored_paths import absolute_path
from emotionthinker.validation import ValidationReport, validate_manifest

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from emotionthinker.corpora import ManifestResult

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
QUARANTINE = "manifest.quarantine.jsonl"  # same naming as `emotionthinker manifest --out`
SUMMARY = "summary.json"
QUARANTINE_COLUMNS = ["id", "audio_path", "stage", "reason", "error_type", "detail"]


class CountMismatch(AssertionError):
    """Files found and records + quarantine + exclusions + skips disagree: a record went missing."""


@dataclass(frozen=True)
class Dataset:
    directory: Path
    manifest: Path
    quarantine: Path
    summary: Path


def dataset_dir(cfg: Config, corpus: str) -> Path:
    return cfg.data_dir / "manifests" / corpus


def build(corpus: str, root: str | Path, cfg: Config) -> "ManifestResult":
    """The corpus adapter: records, exclusions, skips and manifest-stage quarantine."""
    from emotionthinker.corpora import build_manifest

    return build_manifest(corpus, Path(root), cfg)


def validate(result: "ManifestResult", cfg: Config) -> ValidationReport:
    """GX manifest suite + readable-audio check; the adapter's quarantine counts towards the failure rate."""
    return validate_manifest(result.records, cfg, prior_quarantine=result.quarantined)


def count(result: "ManifestResult", report: ValidationReport) -> dict[str, Any]:
    """Counts per label / split / corpus / gender, quarantine by reason and stage; checks they reconcile."""
    valid: list[ManifestRecord] = report.valid
    excluded, skipped = sum(result.excluded.values()), sum(result.skipped.values())
    found = len(result.records) + len(result.quarantined) + excluded + skipped
    accounted = len(valid) + len(report.quarantined) + excluded + skipped
    if found != accounted:
        raise CountMismatch(f"{found} files found but {accounted} accounted for: a record was lost or duplicated")
    by_label = Counter(r.emotion for r in valid)
    return {
        "files_found": found,
        "records": len(valid),
        "quarantined": len(report.quarantined),
        "excluded": excluded,
        "skipped": skipped,
        "failure_rate": round(report.failure_rate, 6),
        "by_label": {label: by_label[label] for label in LABELS},
        "by_split": dict(sorted(Counter(r.split for r in valid).items())),
        "by_corpus": dict(sorted(Counter(r.corpus for r in valid).items())),
        "by_gender": dict(sorted(Counter(r.gender for r in valid).items())),
        "quarantine_by_reason": dict(sorted(report.reasons().items())),
        "quarantine_by_stage": dict(sorted(Counter(q.stage for q in report.quarantined).items())),
        "excluded_by_label": dict(sorted(result.excluded.items())),
        "skipped_by_kind": dict(sorted(result.skipped.items())),
    }


def write_dataset(corpus: str, report: ValidationReport, counts: dict[str, Any], cfg: Config) -> Dataset:
    """Write manifest, quarantine and summary, sorted so that the same data gives the same bytes."""
    out = dataset_dir(cfg, corpus)
    out.mkdir(parents=True, exist_ok=True)
    ds = Dataset(out, out / MANIFEST, out / QUARANTINE, out / SUMMARY)
    write_jsonl(ds.manifest, sorted(report.valid, key=lambda r: r.id))
    write_jsonl(ds.quarantine, sorted(report.quarantined, key=lambda q: (q.id, q.stage, q.reason)))
    ds.summary.write_text(json.dumps({"corpus": corpus, **counts}, indent=1, sort_keys=True) + "\n")
    return ds


def write_failed_quarantine(corpus: str, report: ValidationReport, cfg: Config) -> Path:
    """On a failed validation the dataset is not replaced; the quarantine goes to the workspace for inspection."""
    path = cfg.workspace / "reports" / "ingest" / corpus / QUARANTINE
    write_jsonl(path, sorted(report.quarantined, key=lambda q: (q.id, q.stage, q.reason)))
    return path


def audio_is_versionable(root: Path, data: Path, cfg: Config) -> bool:
    """The corpus audio can be `dvc add`-ed in place: inside the DVC repo, in a non-ignored folder,
    and not overlapping the manifest dataset (DVC forbids overlapping outputs)."""
    from emotionthinker.versioning import dvc_location, git_ignored

    loc = dvc_location(cfg)
    root, data = root.resolve(), data.resolve()
    if not root.is_dir() or not root.is_relative_to(loc.root) or root == loc.root:
        return False
    if root.is_relative_to(data) or data.is_relative_to(root):
        return False
    return not (loc.scm and git_ignored(loc.root, root))


def version(ds: Dataset, root: str | Path, cfg: Config) -> dict[str, str]:
    """DVC add + push the dataset (and the corpus audio when it lives in the repo); {path: md5}."""
    from emotionthinker.versioning import dvc_add_and_push

    versions: dict[str, str] = {}
    pushed = dvc_add_and_push(ds.directory, cfg)
    versions[pushed["path"]] = pushed["md5"]
    if audio_is_versionable(Path(root), ds.directory, cfg):
        audio = dvc_add_and_push(Path(root), cfg)
        versions[audio["path"]] = audio["md5"]
    else:
        log.info("corpus audio at %s is outside the DVC repository: versioned through the manifest only", root)
    return versions


def ingest_params(corpus: str, root: str | Path, cfg: Config) -> dict[str, Any]:
    return {
        "corpus": corpus,
        "root": str(absolute_path(root)),
        "audio": cfg.audio.model_dump(),
        "validation": cfg.validation.model_dump(),
        "data_dir": str(cfg.data_dir),
    }


def metrics(counts: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics: totals, then per label / split / corpus / gender / quarantine reason / exclusion."""
    totals = ("files_found", "records", "quarantined", "excluded", "skipped")
    out: dict[str, float] = {k: float(counts[k]) for k in totals}
    out["failure_rate"] = float(counts["failure_rate"])
    for group, prefix in (
        ("by_label", "label"), ("by_split", "split"), ("by_corpus", "corpus"), ("by_gender", "gender"),
        ("quarantine_by_reason", "quarantine"), ("excluded_by_label", "excluded"),
    ):  # fmt: skip
        for key, n in counts[group].items():
            out[f"{prefix}.{key}"] = float(n)
    return out


def plot_counts(corpus: str, counts: dict[str, Any]) -> "Figure":
    """Records per label beside the files that did not make it (quarantined by reason, excluded by label)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.5))
    ax_l, ax_q = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    labels = list(counts["by_label"])
    ax_l.bar(range(len(labels)), [counts["by_label"][k] for k in labels], color="tab:blue")
    ax_l.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax_l.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_l.set_ylabel("records")
    ax_l.set_title(f"{corpus}: {counts['records']} records of {counts['files_found']} files")
    bars = [(f"quarantined: {r}", n, "tab:red") for r, n in counts["quarantine_by_reason"].items()]
    bars += [(f"excluded: {label}", n, "tab:gray") for label, n in counts["excluded_by_label"].items()]
    if bars:
        ax_q.barh([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
        ax_q.invert_yaxis()
        ax_q.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_q.set_xlabel("files")
    else:
        ax_q.text(0.5, 0.5, "nothing quarantined\nor excluded", ha="center", va="center", transform=ax_q.transAxes)
        ax_q.set_axis_off()
    ax_q.set_title(f"quarantined {counts['quarantined']} / excluded {counts['excluded']} / skipped {counts['skipped']}")
    fig.tight_layout()
    return fig


def log_run(
    cfg: Config,
    corpus: str,
    root: str | Path,
    counts: dict[str, Any],
    report: ValidationReport,
    data_version: dict[str, str] | None,
    files: list[Path],
    failed: Exception | None = None,
) -> str:
    """One MLflow run for the ingest: params, counts as metrics, quarantine table, GX results, plot.

    With `failed` (the error that stops the flow) the run is recorded as FAILED with the same artifacts.
    """
    import pandas as pd

    from emotionthinker.tracking import start_stage_run
    from emotionthinker.validation import results_payload

    params = ingest_params(corpus, root, cfg)
    try:
        with start_stage_run(cfg, "ingest", params, data_version, run_name=f"ingest-{corpus}") as run:
            run.set_tags({"corpus": corpus})
            run.log_metrics(metrics(counts))
            run.log_dict(counts, "ingest/counts.json")
            rows = [q.model_dump(mode="json") for q in report.quarantined]
            run.log_table(pd.DataFrame(rows, columns=QUARANTINE_COLUMNS), "ingest/quarantine.json")
            run.log_dict(results_payload(report), "validation/gx_results.json")
            run.log_figure(plot_counts(corpus, counts), "ingest/counts.png")
            for path in files:
                run.log_artifact(path, "ingest/dataset")
            if failed is not None:
                raise failed  # start_stage_run marks the run FAILED with the error
    except BaseException as exc:
        if exc is not failed:
            raise
    return run.run_id


def summary(
    corpus: str, root: str | Path, ds: Dataset, counts: dict[str, Any], run_id: str, data_version: dict[str, str]
) -> dict[str, Any]:
    return {
        "corpus": corpus,
        "root": str(absolute_path(root)),
        "dataset_dir": str(ds.directory),
        "manifest": str(ds.manifest),
        "quarantine": str(ds.quarantine),
        "counts": counts,
        "run_id": run_id,
        "data_version": data_version,
    }
