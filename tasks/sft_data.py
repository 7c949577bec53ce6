"""Prefect tasks of the sft_data flow: thin wrappers around emotionthinker.sft_data."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from emotionthinker.config import Config
from emotionthinker.sft_data.corpus import SftCorpusReport
from tasks.retry import unless_stated_stop


@task(name="build-sft-corpus", cache_policy=NO_CACHE)
def build_corpus(annotated: Path, cot: Path | None, out: Path, cfg: Config) -> SftCorpusReport:
    from emotionthinker.records import read_input_jsonl, read_jsonl
    from emotionthinker.sft_data import build_sft_corpus

    return build_sft_corpus(read_input_jsonl(annotated), read_jsonl(cot) if cot else None, out, cfg)


@task(name="dvc-add-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=unless_stated_stop)
def version_sft_data(directory: Path, cfg: Config) -> dict[str, str]:
    from emotionthinker.versioning import dvc_add_and_push

    pushed = dvc_add_and_push(directory, cfg)
    return {pushed["path"]: pushed["md5"]}


@task(name="log-sft-data-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=unless_stated_stop)
def log_sft_data_run(cfg: Config, annotated: str, cot: str | None, report: SftCorpusReport,
                     data_version: dict[str, str]) -> str:  # fmt: skip
    from emotionthinker.tracking import start_stage_run

    params = {"annotated": annotated, "cot": cot or "", "sft_data": cfg.sft_data}
    with start_stage_run(cfg, "sft_data", params, data_version, run_name="sft-data") as run:
        run.log_metrics({f"samples.{name}": sum(tasks.values()) for name, tasks in report.counts.items()}
                        | {f"quarantined.{k}": v for k, v in report.quarantined.items()}
                        | {"audio_seconds": report.total_audio_seconds, "wall_s": report.wall_seconds})  # fmt: skip
        run.log_dict(report.to_dict(), "sft_data_report.json")
    return run.run_id
