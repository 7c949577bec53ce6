"""Prefect tasks of the CoT flow (thin wrappers around emotionthinker.cot.stage).

Writing reasoning retries: endpoint trouble is transient, and the writer resumes by record id.
Bad input (an annotated file with a line that is not JSON) fails at once.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker.config import Config
from emotionthinker.cot import stage
from tasks.retry import unless_stated_stop


@task(name="write-cot-and-rm-tuples", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10,
      retry_condition_fn=unless_stated_stop)
def write_cot_data(annotated: Path, cfg: Config, out_dir: Path | None) -> stage.CotStageResult:
    return stage.run_cot_stage(annotated, cfg, out_dir)


@task(name="dvc-add-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=unless_stated_stop)
def version_cot_data(directory: Path, cfg: Config) -> dict[str, str]:
    from emotionthinker.versioning import dvc_add_and_push

    pushed = dvc_add_and_push(directory, cfg)
    return {pushed["path"]: pushed["md5"]}


@task(name="log-cot-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def log_cot_run(cfg: Config, annotated: Path, res: stage.CotStageResult, data_version: dict[str, str] | None) -> str:
    return stage.log_cot_run(cfg, annotated, res, data_version)
