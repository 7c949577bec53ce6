"""The `sft_data` flow (DESIGN.md stage 5, data): annotated records + EmotionCoT -> the prosody-centric
SFT corpus (stress, attribute, comparative, ASR, cold-start CoT samples) -> GX -> DVC add + push ->
MLflow run with the counts, the augmentation keep rates and the report."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from emotionthinker.config import load_config
from emotionthinker.sft_data import output_lock
from emotionthinker.stored_paths import absolute_path
from tasks.sft_data import build_corpus, log_sft_data_run, version_sft_data


@flow(name="sft_data")
def sft_data_flow(annotated: str, cot: str | None = None, out_dir: str | None = None, profile: str = "tiny",
                  config_file: str | None = None) -> dict[str, Any]:  # fmt: skip
    logger = get_run_logger()
    cfg = load_config(profile, config_file)
    out = absolute_path(out_dir) if out_dir else cfg.data_dir / "sft"
    with output_lock(out, cfg):  # held until the data are versioned and logged
        report = build_corpus(absolute_path(annotated), absolute_path(cot) if cot else None, out, cfg)
        data_version = version_sft_data(out, cfg)
        logger.info("SFT corpus %s: data version %s", out, data_version)
        run_id = log_sft_data_run(cfg, annotated, cot, report, data_version)
    return {"data_dir": str(out), "counts": report.counts, "quarantined": report.quarantined,
            "rendered_now": report.rendered_now, "data_version": data_version, "run_id": run_id}  # fmt: skip
