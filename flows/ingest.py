"""The `ingest` flow: corpus adapter -> manifest -> GX validation + audio check (quarantine)
-> dataset under <data>/manifests/<corpus>/ -> DVC add + push -> MLflow run.

A failure rate above validation.max_failure_rate stops the flow before the
dataset is replaced or versioned; the quarantine still lands in MLflow (run
marked FAILED) and in <workspace>/reports/ingest/<corpus>/ for inspection.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from emotionthinker import ingest
from emotionthinker.config import load_config
from emotionthinker.validation import ValidationFailed
from tasks.ingest import (
    build_manifest, count_records, log_ingest_run, validate_manifest, version_dataset, write_dataset,
)


@flow(name="ingest")
def ingest_flow(corpus: str, root: str, profile: str = "tiny", config_file: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = load_config(profile, config_file)
    root = str(root)

    result = build_manifest(corpus, root, cfg)
    report = validate_manifest(result, cfg)
    counts = count_records(result, report)
    logger.info(
        "%s: %d files, %d records, %d quarantined (%s), %d excluded, %d skipped",
        corpus, counts["files_found"], counts["records"], counts["quarantined"],
        counts["quarantine_by_reason"] or "none", counts["excluded"], counts["skipped"],
    )  # fmt: skip
    try:
        report.raise_if_over(cfg.validation.max_failure_rate)
    except ValidationFailed as exc:
        path = ingest.write_failed_quarantine(corpus, report, cfg)
        run_id = log_ingest_run(cfg, corpus, root, counts, report, None, [path], failed=exc)
        logger.error("%s; quarantine written to %s; MLflow run %s (FAILED)", exc, path, run_id)
        raise

    ds = write_dataset(corpus, report, counts, cfg)
    data_version = version_dataset(ds, root, cfg)
    run_id = log_ingest_run(cfg, corpus, root, counts, report, data_version, [ds.summary, ds.quarantine])
    logger.info("dataset %s (DVC %s), MLflow run %s", ds.directory, data_version, run_id)
    return ingest.summary(corpus, root, ds, counts, run_id, data_version)

