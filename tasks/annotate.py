"""Prefect tasks of the annotate flow: thin wrappers around emotionthinker.annotate / annotation_report.

Annotation itself is resumable at the record level (streamed measures keyed by
id), so the task retries once after a crash and continues where it stopped; bad input (a
manifest line that is not JSON, an unreadable calibration) fails at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker import annotate, annotation_report
from emotionthinker.config import Config
from emotionthinker.validation import ValidationReport
from tasks.retry import unless_stated_stop


@task(name="annotate-clips", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, retry_condition_fn=unless_stated_stop)
def annotate_clips(
    manifest: Path, out: Path, cfg: Config, use_asr: bool, calibration: Path | None, workers: int | None
) -> annotate.AnnotateReport:
    return annotate.annotate_manifest(manifest, out, cfg, use_asr=use_asr, calibration=calibration, workers=workers)


@task(name="validate-annotated", cache_policy=NO_CACHE)
def validate_annotated(out: Path, cfg: Config) -> ValidationReport:
    from emotionthinker.records import read_jsonl

    return annotation_report.validate_annotated(read_jsonl(out), cfg)


@task(name="dvc-add-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=unless_stated_stop)
def version_annotations(directory: Path, cfg: Config) -> dict[str, str]:
    from emotionthinker.versioning import dvc_add_and_push

    pushed = dvc_add_and_push(directory, cfg)
    return {pushed["path"]: pushed["md5"]}


@task(name="log-annotate-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def log_annotate_run(
    cfg: Config, manifest: Path, report: Any, validation: ValidationReport, data_version: dict[str, str] | None,
    use_asr: bool, failed: Exception | None = None,
) -> str:
    return annotation_report.log_annotate_run(cfg, manifest, report, validation, data_version, use_asr, failed)
