"""Prefect tasks of the grpo_ptr flow: thin wrappers around models.grpo_pipeline.

Training is not retried (a rerun of the flow resumes from the last checkpoint); MLflow and registry
writes retry (SQLite 'database is locked' under concurrent runs).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker.config import Config
from models import grpo_pipeline as P
from models.grpo_data import GrpoData
from models.grpo_trainer import GrpoResult
from tasks.retry import unless_stated_stop


@task(name="grpo-load-prompts", cache_policy=NO_CACHE)
def load_prompts(path: str, cfg: Config) -> GrpoData:
    return P.load_data(path, cfg)


@task(name="grpo-ptr-train", cache_policy=NO_CACHE)
def train(data: GrpoData, cfg: Config, run_id: str, policy: str | None, reward_source: str | None) -> GrpoResult:
    return P.train_logged(data, cfg, run_id, policy, reward_source)


@task(name="grpo-log-result", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def log_result(cfg: Config, run_id: str, result: GrpoResult, data: GrpoData) -> None:
    P.log_result(cfg, run_id, result, data)


@task(name="grpo-register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def register(model_dir: str, cfg: Config, run_id: str, result: GrpoResult, data: GrpoData) -> dict[str, str]:
    return P.register_logged(model_dir, cfg, run_id, result, data)
