"""The `promote` flow: challenger vs champion on the gate metric -> `champion` alias moved only on a win.

Two promotions of one model never interleave: the flow holds a Prefect global concurrency limit
`promote-<model>` with limit 1 (created on first use), which covers every machine that shares the
Prefect server, and the plain function inside takes a file lock beside the MLflow store, which also
covers runs that bypass Prefect (`emotionthinker promote --no-flow`, notebooks).
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from emotionthinker.config import Config, load_config
from emotionthinker.promotion import EvaluateFn, PromotionDecision, promote
from tasks.retry import unless_stated_stop

LIMIT_PREFIX = "promote-"


def concurrency_limit_name(model_name: str) -> str:
    return f"{LIMIT_PREFIX}{model_name}"


def ensure_concurrency_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit `name` (active, `limit` slots), or repair it if it was changed.

    Without it, `concurrency(..., strict=False)` would silently not limit anything; creating it
    here (idempotent, race-tolerant) means no setup step a user could forget.
    """
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        # Read first: a create that collides makes the server log a UNIQUE-constraint traceback.
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True))
                return
            except ObjectAlreadyExists:  # a promotion starting at the same moment made it
                current = client.read_global_concurrency_limit_by_name(name)
        if current.limit != limit or not current.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))


def default_evaluator(cfg: Config) -> EvaluateFn | None:
    """The evaluation stage's entry point for one registered version, when that stage is installed.

    Contract: `emotionthinker.evaluation.evaluate_model_version(cfg, model_name, version, eval_data_version)`
    leaves a finished MLflow run tagged with `promotion.evaluation_tags(...)`. Absent -> None, and a
    version without an evaluation yields a `missing_evaluation` decision instead.
    """
    if not cfg.promotion.evaluate_missing:
        return None
    try:
        fn = getattr(importlib.import_module("emotionthinker.evaluation"), "evaluate_model_version")
    except (ImportError, AttributeError):
        return None
    return lambda name, version, data: fn(cfg, name, version, data)


@task(name="promote-model", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, retry_condition_fn=unless_stated_stop)
def promote_task(cfg: Config, model_name: str, gate_metric: str | None, eval_data_version: str | None,
                 version: str | None = None) -> PromotionDecision:  # fmt: skip
    return promote(cfg, model_name, gate_metric, eval_data_version, evaluate_fn=default_evaluator(cfg), version=version)


@flow(name="promote")
def promote_flow(
    model: str | None = None,
    profile: str = "tiny",
    config_file: str | None = None,
    gate_metric: str | None = None,
    eval_data_version: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = load_config(profile, config_file)
    name = model or cfg.promotion.model_name
    limit = concurrency_limit_name(name)
    ensure_concurrency_limit(limit)
    with concurrency(limit, occupy=1, timeout_seconds=cfg.promotion.lock_timeout_s, strict=True):
        decision = promote_task(cfg, name, gate_metric, eval_data_version, version)
    logger.info("%s (MLflow run %s)", decision.summary(), decision.run_id)
    return decision.as_dict()
