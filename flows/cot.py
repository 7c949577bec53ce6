"""The `cot` flow (EmotionCoT stages 4 and 6): annotated records -> reasoning (LLM endpoint or
offline composer) -> GX -> reward-model tuples -> GX -> DVC add + push -> MLflow run
(token counts, sample table, score histogram)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from emotionthinker.config import load_config
from emotionthinker.cot.stage import cot_dir, output_lock
from emotionthinker.stored_paths import absolute_path
from emotionthinker.validation import ValidationFailed
from tasks.cot import log_cot_run, version_cot_data, write_cot_data


@flow(name="cot")
def cot_flow(annotated: str, out_dir: str | None = None, profile: str = "tiny", config_file: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = load_config(profile, config_file)
    annotated_path = absolute_path(annotated)
    out = absolute_path(out_dir) if out_dir else cot_dir(cfg, annotated_path)
    with output_lock(out, cfg):  # held until the data are versioned and logged
        res = write_cot_data(annotated_path, cfg, out)
        r = res.report
        failed = r.n_errors + len(res.cot_validation.quarantined)
        rate = failed / r.n_input if r.n_input else 0.0
        logger.info("%s wrote %d (+%d resumed), %d errors, %d GX-quarantined; %d RM tuples",
                    r.writer, r.n_written, r.n_resumed, r.n_errors, len(res.cot_validation.quarantined),
                    res.rm_summary["n_tuples"])  # fmt: skip
        error = None
        if rate > cfg.validation.max_failure_rate:
            error = ValidationFailed("cot", rate, cfg.validation.max_failure_rate, res.report.error_reasons)
        data_version = None if error else version_cot_data(res.directory, cfg)
        run_id = log_cot_run(cfg, annotated_path, res, data_version)
    if error:
        raise error
    return {
        "cot": str(res.cot), "rm_tuples": str(res.rm_tuples), "directory": str(res.directory),
        "counts": {"input": r.n_input, "written": len(res.cot_validation.valid), "errors": r.n_errors,
                   "rm_tuples": res.rm_summary["n_tuples"]},
        "writer": r.writer, "histogram": res.rm_summary["histogram"], "data_version": data_version, "run_id": run_id,
    }  # fmt: skip
