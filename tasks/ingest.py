"""Prefect tasks of the ingest flow: thin wrappers around emotionthinker.ingest.

Only steps that touch something that can fail transiently retry: the DVC
push (repository lock, remote I/O) and the MLflow write (SQLite 'database is
locked' under concurrent runs). Nothing is cached: records are large, and the
steps are idempotent anyway (same corpus -> same dataset bytes -> same md5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker import ingest
from emotionthinker.config import Config
from emotionthinker.validation import ValidationReport
from tasks.retry import unless_stated_stop


@task(name="build-manifest", cache_policy=NO_CACHE)
def build_manifest(corpus: str, root: str, cfg: Config):
    return ingest.build(corpus, root, cfg)


@task(name="validate-manifest", cache_policy=NO_CACHE)
def validate_manifest(result, cfg: Config) -> ValidationReport:
    return ingest.validate(result, cfg)


@task(name="count-records", cache_policy=NO_CACHE)
def count_records(result, report: ValidationReport) -> dict[str, Any]:
    return ingest.count(result, report)


@task(name="write-dataset", cache_policy=NO_CACHE)
def write_dataset(corpus: str, report: ValidationReport, counts: dict[str, Any], cfg: Config) -> ingest.Dataset:
    return ingest.write_dataset(corpus, report, counts, cfg)


@task(name="dvc-add-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=unless_stated_stop)
def version_dataset(ds: ingest.Dataset, root: str, cfg: Config) -> dict[str, str]:
    return ingest.version(ds, root, cfg)


@task(name="log-ingest-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def log_ingest_run(
    cfg: Config,
    corpus: str,
    root: str,
    counts: dict[str, Any],
    report: ValidationReport,
    data_version: dict[str, str] | None,
    files: list[Path],
    failed: Exception | None = None,
) -> str:
    return ingest.log_run(cfg, corpus, root, counts, report, data_version, files, failed)
