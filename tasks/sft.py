"""Prefect tasks of the sft flow: thin wrappers around models.sft_pipeline.

Training is not retried (a retry resumes from the last checkpoint anyway, but a crash in training
is usually not transient); MLflow writes retry (SQLite 'database is locked' under concurrent runs).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker.config import Config
from models import sft_pipeline as P
from models.sft import StageResult
from tasks.retry import unless_stated_stop


@task(name="load-sft-samples", cache_policy=NO_CACHE)
def load_samples(cfg: Config, data_dir: str | None) -> P.SftData:
    return P.load_sft_data(cfg, data_dir)


@task(name="sft-train-stage", cache_policy=NO_CACHE)
def train_stage(stage: str, base: str, base_id: str, data: P.SftData, cfg: Config, parent_run_id: str | None) -> StageResult:
    return P.train_stage_logged(stage, base, base_id, data, cfg, parent_run_id)


@task(name="sft-sample-generations", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def sample_generations(model_source: str, data: P.SftData, cfg: Config, run_id: str | None) -> list[dict[str, Any]]:
    return P.sample_generations_logged(model_source, data, cfg, run_id)


@task(name="sft-evaluate", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def evaluate(model_source: str, data: P.SftData, cfg: Config, run_id: str | None, prefix: str) -> dict[str, float]:
    return P.evaluate_logged(model_source, data, cfg, run_id, prefix)


@task(name="sft-register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def register(model_dir: str, cfg: Config, run_id: str, metrics: dict[str, float], data: P.SftData) -> dict[str, str]:
    return P.register_logged(model_dir, cfg, run_id, metrics, data)
