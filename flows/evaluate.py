"""The `evaluate` flow (DESIGN.md stage 8): one model on one benchmark or manifest -> batched greedy
answers (resumable) -> UAR / weighted accuracy / macro-F1 / format rate / confusion matrix -> reasoning
judges -> one MLflow run tagged with the model version and the data version.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from emotionthinker.config import load_config
from emotionthinker.evaluation.judges import check_judges
from emotionthinker.evaluation.report import run_directory
from tasks.evaluate import annotate, describe, judge, log_evaluation, predict, select_data


@flow(name="evaluate")
def evaluate_flow(
    model_source: str,
    manifest: str | None = None,
    benchmark: str | None = None,
    profile: str = "tiny",
    config_file: str | None = None,
    judges: list[str] | None = None,
    split: str | None = None,
    limit: int | None = None,
    annotated: str | None = None,
    root: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = load_config(profile, config_file)
    judges = list(cfg.eval.judges if judges is None else judges)
    check_judges(judges, cfg)
    data = select_data(cfg, manifest, benchmark, split, limit, root)
    info = describe(cfg, model_source, variant)
    directory = run_directory(cfg, info, data)
    logger.info("evaluating %s (%s) on %s: %d clips -> %s", info.label, info.variant or "-", data.benchmark,
                len(data.records), directory)  # fmt: skip

    pred = predict(cfg, info, data, directory)
    logger.info("answered %d clips (%d this run, %d quarantined) in %.1f s", len(pred.rows), pred.n_generated,
                len(pred.quarantined), pred.wall_s)  # fmt: skip
    annotation_counts: dict[str, int] = {}
    results = {}
    if judges and pred.rows:
        records = data.records
        if {"factual", "llm"} & set(judges):
            records, annotation_counts = annotate(cfg, data, directory, annotated)
        by_id = {r["id"]: r for r in records}
        results = judge(cfg, judges, pred.rows, [by_id[r["id"]] for r in pred.rows], directory.parent / "judge_cache.sqlite")
    out = log_evaluation(cfg, info, data, pred, results, annotation_counts)
    m = out.metrics
    logger.info("%s on %s: UAR %.4f, WA %.4f, macro-F1 %.4f, format %.3f; MLflow run %s", info.label, data.benchmark,
                m["uar"], m["weighted_accuracy"], m["macro_f1"], m.get("format_rate", float("nan")), out.run_id)  # fmt: skip
    return {
        "run_id": out.run_id, "benchmark": data.benchmark, "model": info.as_dict(), "metrics": m,
        "judges": out.judges, "outputs": {k: str(v) for k, v in out.outputs.items()}, "directory": str(directory),
        "eval_data_version": data.eval_data_version, "data_version": data.data_version, "n": len(pred.rows),
        "quarantined": len(pred.quarantined), "annotations": annotation_counts,
    }  # fmt: skip
