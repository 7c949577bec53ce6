"""The `annotate` flow (EmotionCoT stage 1): manifest -> prosody/ASR/stress/traits annotation
(process pool, streamed, resumable) -> calibrated levels -> GX validation with quarantine
-> DVC add + push -> MLflow run with label distributions, thresholds and F0-contour plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from emotionthinker.annotate import annotation_dir, finalize_validated, output_lock
from emotionthinker.config import load_config
from emotionthinker.stored_paths import absolute_path
from tasks.annotate import annotate_clips, log_annotate_run, validate_annotated, version_annotations


@flow(name="annotate")
def annotate_flow(
    manifest: str,
    out: str | None = None,
    profile: str = "tiny",
    config_file: str | None = None,
    use_asr: bool = True,
    calibration: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = load_config(profile, config_file)
    manifest_path = absolute_path(manifest)
    out_path = absolute_path(out) if out else annotation_dir(cfg, manifest_path) / "annotated.jsonl"

    with output_lock(out_path, cfg):  # held until the output is validated, versioned and logged
        report = annotate_clips(manifest_path, out_path, cfg, use_asr, Path(calibration) if calibration else None, workers)
        logger.info(
            "annotated %d of %d clips (%d resumed, %d quarantined%s), %s",
            report.n_annotated, report.n_input, report.n_resumed, report.n_quarantined,
            f" {report.quarantine_by_reason}" if report.quarantine_by_reason else "", report.speed_text,
        )  # fmt: skip
        validation = validate_annotated(out_path, cfg)
        failed = finalize_validated(report, validation, cfg)
        data_version = None
        folder, data_dir = out_path.parent.resolve(), cfg.data_dir.resolve()  # symlinks either way: same folder
        in_data = folder.is_relative_to(data_dir) and folder != data_dir
        if not failed and (in_data or not cfg.services.dvc_track):
            data_version = version_annotations(out_path.parent, cfg)
        elif not failed:  # `dvc add` refuses paths outside its repository; the work is kept, unversioned
            logger.warning("%s is not a folder inside the data folder %s: not versioned with DVC", out_path.parent, cfg.data_dir)
        run_id = log_annotate_run(cfg, manifest_path, report, validation, data_version, use_asr, failed)
        if failed:
            logger.error("%s; MLflow run %s (FAILED)", failed, run_id)
            raise failed
    return {
        "annotated": str(out_path),
        "quarantine": str(report.quarantine),
        "calibration": str(report.calibration),
        "counts": {
            "input": report.n_input,
            "annotated": len(validation.valid),
            "quarantined": report.n_quarantined + len(validation.quarantined),
            "resumed": report.n_resumed,
        },
        "x_realtime": report.realtime_factor,
        "speed": report.speed_text,
        "data_version": data_version,
        "run_id": run_id,
    }
