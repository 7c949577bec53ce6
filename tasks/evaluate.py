"""Prefect tasks of the evaluate flow: thin wrappers around emotionthinker.evaluation.report.

Prediction is not retried by Prefect (it resumes from predictions.jsonl anyway, and a crash there is
rarely transient); the LLM judge retries per request inside the client; MLflow writes retry
(SQLite 'database is locked' under concurrent runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker.config import Config
from emotionthinker.evaluation import report
from emotionthinker.evaluation.data import EvalData
from emotionthinker.evaluation.identity import ModelInfo, describe_model
from emotionthinker.evaluation.judges import JudgeResult, run_judges
from tasks.retry import unless_stated_stop


@task(name="select-eval-data", cache_policy=NO_CACHE)
def select_data(cfg: Config, manifest: str | None, benchmark: str | None, split: str | None, limit: int | None,
                root: str | None) -> EvalData:  # fmt: skip
    return report.prepare_data(cfg, manifest, benchmark, split, limit, root)


@task(name="describe-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def describe(cfg: Config, model_source: str, variant: str | None) -> ModelInfo:
    return describe_model(model_source, cfg, variant)


@task(name="annotate-eval-clips", cache_policy=NO_CACHE)
def annotate(cfg: Config, data: EvalData, directory: Path, annotated: str | None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    return report.attach_annotations(data, cfg, directory, annotated)


@task(name="predict", cache_policy=NO_CACHE)
def predict(cfg: Config, info: ModelInfo, data: EvalData, directory: Path):
    return report.predict(cfg, info, data, directory, progress=True)


@task(name="judge-reasoning", cache_policy=NO_CACHE)
def judge(cfg: Config, names: list[str], rows: list[dict[str, Any]], records: list[dict[str, Any]],
          cache_path: Path) -> dict[str, JudgeResult]:  # fmt: skip
    return run_judges(names, rows, records, cfg, cache_path=cache_path)


@task(name="log-evaluation", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def log_evaluation(cfg: Config, info: ModelInfo, data: EvalData, pred, judges: dict[str, JudgeResult],
                   annotation_counts: dict[str, int]) -> report.EvaluationOutcome:  # fmt: skip
    metrics, flat = report.score(pred, data, cfg)
    return report.log_run(cfg, info, data, pred, metrics, flat, judges, annotation_counts)
