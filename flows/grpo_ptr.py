"""The `grpo_ptr` flow (DESIGN.md stage 7): prompts (clips + gold labels from a manifest, annotated or
CoT file, bad ones quarantined) -> GRPO-PTR from EmotionThinker-Base with the reward model's R_t under
the progressive schedule, trust weight and group advantages -> one MLflow run (every reward component,
tau, accuracy, KL, clip ratio, lengths per step; completion tables; the R_t switch step; the
reward/accuracy curve) -> `emotionthinker-policy` registered with alias `challenger`.

The paper's Table 4 ablations are the flags (None keeps the configured value). A rerun with the same
inputs reuses the trained policy; an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from emotionthinker.config import load_config
from emotionthinker.tracking import start_stage_run
from flows.common import finish_training_run
from models import grpo_pipeline as P
from models.grpo_trainer import policy_source as resolve_policy
from tasks.grpo import load_prompts, log_result, register, train

ABLATIONS = ("plain_grpo", "untrained_rm", "no_trust_weight", "no_progressive")


@flow(name="grpo_ptr")
def grpo_ptr_flow(
    train_manifest_or_cot: str,
    policy_source: str | None = None,
    reward_source: str | None = None,
    profile: str = "tiny",
    config_file: str | None = None,
    plain_grpo: bool | None = None,
    untrained_rm: bool | None = None,
    no_trust_weight: bool | None = None,
    no_progressive: bool | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    flags = {k: v for k, v in {"plain_grpo": plain_grpo, "untrained_rm": untrained_rm, "no_trust_weight": no_trust_weight,
                               "no_progressive": no_progressive, "max_steps": max_steps}.items() if v is not None}  # fmt: skip
    cfg = load_config(profile, config_file, overrides={"grpo": flags} if flags else None)
    data = load_prompts(train_manifest_or_cot, cfg)
    logger.info("GRPO prompts from %s: %s; data version %s", data.path, data.counts(), data.data_version)

    policy = resolve_policy(cfg, policy_source)
    g = cfg.grpo
    params = {"prompts_file": str(data.path), "policy_source": policy, "reward_source": reward_source or "",
              "reasoning_schedule": g.reasoning_schedule, "counts": data.counts(), "grpo": g, "models": cfg.models,
              **{f"ablation.{a}": getattr(g, a) for a in ABLATIONS}}  # fmt: skip
    with start_stage_run(cfg, "grpo_ptr", params=params, data_version=data.data_version, run_name=P.run_name(cfg),
                         tags={"reasoning_schedule": g.reasoning_schedule}) as run:  # fmt: skip
        result = train(data, cfg, run.run_id, policy, reward_source)
        log_result(cfg, run.run_id, result, data)
        s = result.summary()
        logger.info("GRPO-PTR: %d steps (R_t on at step %s); reward %.3f -> %.3f, accuracy %.3f -> %.3f (first/last 5 "
                    "steps); %.0f s%s -> %s", result.global_step, result.switch_step, s["reward_first5"] or 0,
                    s["reward_last5"] or 0, s["accuracy_first5"] or 0, s["accuracy_last5"] or 0, result.runtime_s,
                    " (reused)" if result.reused else "", result.model_dir)  # fmt: skip
        registered = register(result.model_dir, cfg, run.run_id, result, data) if g.register_model else None
        wall_s = finish_training_run(run, logger, started, registered)
    return {
        "run_id": run.run_id,
        "prompts": str(data.path),
        "counts": data.counts(),
        "data_version": data.data_version,
        "policy_source": policy,
        "model_dir": result.model_dir,
        "global_step": result.global_step,
        "switch_step": result.switch_step,
        "summary": s,
        "reused": result.reused,
        "resumed_from": result.resumed_from,
        "registered": registered,
        "wall_s": wall_s,
    }
