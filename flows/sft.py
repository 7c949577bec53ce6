"""The `sft` flow (DESIGN.md stage 5): SFT samples -> stage I (encoder per config, adapter, LM on the
prosody corpus) -> stage II (LM LoRA on cold-start CoT, merged) -> sample generations -> held-out
evaluation against the untrained base -> `emotionthinker-base` registered with alias `challenger`.

Rerunning with the same inputs reuses finished stages and resumes an interrupted one from its last
checkpoint (models/checkpoints.py).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from emotionthinker.config import load_config
from emotionthinker.tracking import start_stage_run
from flows.common import finish_training_run
from models import sft_pipeline as P
from models.sources import source_identity
from tasks.sft import evaluate, load_samples, register, sample_generations, train_stage


@flow(name="sft")
def sft_flow(profile: str = "tiny", config_file: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    cfg = load_config(profile, config_file)
    data = load_samples(cfg, data_dir)
    logger.info("SFT samples in %s: %s; quarantined %s; data version %s", data.data_dir, data.counts(),
                {k: len(v) for k, v in data.quarantined.items()}, data.data_version)  # fmt: skip

    base = P.base_source(cfg)
    params = {"base_source": base, "data_dir": str(data.data_dir), "stages": cfg.sft.stages, "counts": data.counts()}
    with start_stage_run(cfg, "sft", params=params, data_version=data.data_version, run_name="sft") as run:
        stages: dict[str, Any] = {}
        model, model_id = base, source_identity(base, cfg)  # a registry alias counts as the version it points at
        for stage in cfg.sft.stages:  # stage II starts from stage I's model
            result = train_stage(stage, model, model_id, data, cfg, run.run_id)
            stages[stage] = result.to_dict()
            model, model_id = result.model_dir, f"{stage}:{result.fingerprint}"
            logger.info("%s: %d steps, loss %s -> %s, %.0f s%s -> %s", stage, result.global_step, result.first_loss,
                        result.last_loss, result.runtime_s, " (reused)" if result.reused else "", model)  # fmt: skip

        generations = sample_generations(model, data, cfg, run.run_id)
        metrics = evaluate(model, data, cfg, run.run_id, "eval")
        base_metrics = evaluate(base, data, cfg, run.run_id, "base_eval") if cfg.sft.eval_base else {}
        logger.info("held-out: trained %s; base %s", metrics, base_metrics)
        registered = register(model, cfg, run.run_id, metrics, data) if cfg.sft.register_model and cfg.sft.stages else None
        wall_s = finish_training_run(run, logger, started, registered)
    return {
        "run_id": run.run_id,
        "data_dir": str(data.data_dir),
        "data_version": data.data_version,
        "counts": data.counts(),
        "quarantined": {k: len(v) for k, v in data.quarantined.items()},
        "stages": stages,
        "model_dir": model,
        "sample_generations": generations,
        "eval": metrics,
        "base_eval": base_metrics,
        "registered": registered,
        "wall_s": wall_s,
    }
