"""The `reward_model` flow (DESIGN.md stage 6): RM tuples -> quarantine and held-out split (by corpus split,
else by record) -> training (LoRA merged in `tiny`, per rm.method) -> held-out Spearman per criterion and
parse rate (and the untrained base's, with rm.eval_base) -> one MLflow run (params, loss curve, metrics,
sample predictions, confusion image) -> `emotionthinker-reward` registered with alias `challenger`.

A rerun with the same tuples and settings reuses the trained model; an interrupted one resumes.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from emotionthinker.config import load_config
from emotionthinker.tracking import start_stage_run
from flows.common import finish_training_run
from models import reward_model as R
from tasks.reward_model import evaluate, load_tuples, register, train


@flow(name="reward_model")
def reward_model_flow(rm_tuples: str, profile: str = "tiny", config_file: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    cfg = load_config(profile, config_file)
    data = load_tuples(rm_tuples, cfg)
    logger.info("RM tuples %s: %s (held out %s); data version %s", data.path, data.counts(), data.split_by,
                data.data_version)  # fmt: skip

    base = R.base_source(cfg)
    params = {"rm_tuples": str(data.path), "base_source": base, "prompt_version": R.RM_PROMPT_VERSION,
              "split_by": data.split_by, "counts": data.counts(), "rm": cfg.rm, "models": cfg.models,
              "reasoning_weights": cfg.grpo.reasoning_weights,
              "train_score_histogram": R.score_histogram(data.train)}  # fmt: skip
    with start_stage_run(cfg, "reward_model", params=params, data_version=data.data_version,
                         run_name="reward-model") as run:  # fmt: skip
        if data.quarantined:
            run.log_table(data.quarantined, "quarantine.json")
        result = train(data, cfg, run.run_id)
        logger.info("trained %d steps, loss %s -> %s, %.0f s%s -> %s", result.global_step, result.first_loss,
                    result.last_loss, result.runtime_s, " (reused)" if result.reused else "", result.model_dir)  # fmt: skip
        metrics = evaluate(result.model_dir, data, cfg, run.run_id, "eval")
        base_metrics = evaluate(base, data, cfg, run.run_id, "base_eval") if cfg.rm.eval_base else {}
        logger.info("held-out: trained %s; base %s", metrics, base_metrics)
        registered = register(result.model_dir, cfg, run.run_id, metrics, data) if cfg.rm.register_model else None
        wall_s = finish_training_run(run, logger, started, registered)
    return {
        "run_id": run.run_id,
        "rm_tuples": str(data.path),
        "data_version": data.data_version,
        "counts": data.counts(),
        "split_by": data.split_by,
        "training": result.to_dict(),
        "model_dir": result.model_dir,
        "eval": metrics,
        "base_eval": base_metrics,
        "registered": registered,
        "wall_s": wall_s,
    }
