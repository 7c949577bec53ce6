"""Prefect tasks of the reward_model flow: thin wrappers around models.reward_model.

Training is not retried (an interrupted run resumes from its last checkpoint when the flow reruns);
evaluation and MLflow/registry writes retry (SQLite 'database is locked' under concurrent runs).
"""

from __future__ import annotations


from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker.config import Config
from models import reward_model as R
from tasks.retry import unless_stated_stop


@task(name="rm-load-tuples", cache_policy=NO_CACHE)
def load_tuples(path: str, cfg: Config) -> R.RmData:
    return R.load_rm_data(path, cfg)


@task(name="rm-train", cache_policy=NO_CACHE)
def train(data: R.RmData, cfg: Config, run_id: str):
    from emotionthinker.tracking import attach_run

    run = attach_run(cfg, run_id)
    result = R.train_reward_model(data.train, cfg, run)
    R.log_training(run, result, data)
    return result


@task(name="rm-evaluate", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def evaluate(model_source: str, data: R.RmData, cfg: Config, run_id: str, prefix: str) -> dict[str, float]:
    from emotionthinker.tracking import attach_run

    return R.evaluate_logged(model_source, data, cfg, attach_run(cfg, run_id), prefix)


@task(name="rm-register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def register(model_dir: str, cfg: Config, run_id: str, metrics: dict[str, float], data: R.RmData) -> dict[str, str]:
    from emotionthinker.tracking import attach_run

    return R.register_logged(model_dir, cfg, attach_run(cfg, run_id), metrics, data)
