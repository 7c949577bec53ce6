"""The steps of an evaluation as plain functions (flows/evaluate.py chains them as Prefect tasks).

    evaluation data -> annotations for the judges -> batched predictions (resumable) -> metrics
    -> judges -> one MLflow run

MLflow run (stage "evaluate"): tags model_name / model_version (the registry version for registry:
sources; promotion finds runs by these), model_source, model_label, variant, benchmark,
eval_data_version and the data version of the manifest; params: generation settings and counts;
metrics: uar (the promotion gate metric), weighted_accuracy, macro_f1, format_rate, answer_rate,
uar_strict, text_answer_rate, per-class recall/F1, judge/<name>/<criterion|mean|n_scored|failures>;
artifacts: outputs.json (+ .csv; the per-clip table with judge scores),
outputs.jsonl, confusion_matrix.png/.json, metrics.json.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.evaluation.data import EvalData, eval_root, select_eval_data
from emotionthinker.evaluation.identity import ModelInfo
from emotionthinker.evaluation.judges import SHORT, JudgeResult
from emotionthinker.evaluation.metrics import ClassificationMetrics, confusion_figure, metrics_from_rows
from emotionthinker.evaluation.predict import PredictionResult, write_outputs_table
from emotionthinker.records import iter_jsonl
from emotionthinker.stored_paths import absolute_path, resolve_stored_path

log = logging.getLogger(__name__)
STAGE = "evaluate"


@dataclass
class EvaluationOutcome:
    run_id: str
    metrics: dict[str, float]
    directory: Path
    outputs: dict[str, Path]
    judges: dict[str, dict[str, Any]] = field(default_factory=dict)


def prepare_data(
    cfg: Config,
    manifest: str | None,
    benchmark: str | None,
    split: str | None = None,
    limit: int | None = None,
    root: str | None = None,
) -> EvalData:
    """The evaluated records; without a manifest the benchmark's corpus folder is read (default: shared data)."""
    from emotionthinker.evaluation.data import EvalDataError, build_benchmark_manifest, get_benchmark

    if manifest is None:
        if not benchmark:
            raise EvalDataError("give a manifest, a benchmark, or both")
        bench = get_benchmark(benchmark)
        corpus_root = Path(root).expanduser() if root else cfg.shared_data_dir / bench.name
        out = eval_root(cfg) / "manifests" / f"{bench.name}.jsonl"
        manifest = str(build_benchmark_manifest(bench.name, absolute_path(corpus_root), out, cfg))
    return select_eval_data(manifest, benchmark, split, limit)


def attach_annotations(
    data: EvalData, cfg: Config, directory: Path, annotated: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The records with their measured annotations, for the judges: from `annotated` (by id), from the
    manifest itself, or by annotating the missing clips without ASR (eval.annotate_missing). Levels of
    clips annotated here are calibrated on the evaluated clips themselves (per corpus, as the annotate
    stage does); pass the annotate stage's file to use the training data's thresholds instead."""
    import copy

    data = copy.copy(data)
    data.records = [dict(r) for r in data.records]
    counts: Counter = Counter()
    if annotated:
        by_id = {r["id"]: r for r in iter_jsonl(annotated)}
        for rec in data.records:
            src = by_id.get(rec["id"])
            if src and src.get("annotations"):
                rec["annotations"], rec["prosody"] = src["annotations"], src.get("prosody")
                rec["transcription"] = rec.get("transcription") or src.get("transcription")
                counts["from_file"] += 1
    missing = [r for r in data.records if not r.get("annotations")]
    counts["present"] = len(data.records) - len(missing) - counts["from_file"]
    if missing and cfg.eval.annotate_missing:
        from emotionthinker.annotate import annotate_manifest

        report = annotate_manifest(missing, directory / "annotated.jsonl", cfg, use_asr=False,
                                   workers=1 if len(missing) <= 32 else None, progress=False)  # fmt: skip
        by_id = {r["id"]: r for r in iter_jsonl(report.out)}
        for rec in missing:
            if rec["id"] in by_id:
                rec["annotations"], rec["prosody"] = by_id[rec["id"]]["annotations"], by_id[rec["id"]].get("prosody")
                counts["annotated"] += 1
        counts["annotation_quarantined"] = report.n_quarantined
    counts["missing"] = sum(1 for r in data.records if not r.get("annotations"))
    return data.records, dict(counts)


def run_directory(cfg: Config, info: ModelInfo, data: EvalData) -> Path:
    from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT
    from emotionthinker.evaluation.predict import run_key

    max_new = cfg.eval.max_new_tokens or cfg.models.max_new_tokens
    key = run_key(info.identity, data.eval_data_version, max_new, SYSTEM_PROMPT, USER_PROMPT)
    return eval_root(cfg) / "runs" / data.benchmark / key


def predict(cfg: Config, info: ModelInfo, data: EvalData, directory: Path, progress: bool = False) -> PredictionResult:
    """Answer every clip not yet answered in `directory`; the model is loaded only if one is left."""
    from emotionthinker.evaluation.predict import predict_records
    from models.backbone import AudioLM

    return predict_records(lambda: AudioLM.from_source(info.source, cfg), data.records, cfg, directory, progress=progress)


def score(pred: PredictionResult, data: EvalData, cfg: Config) -> tuple[ClassificationMetrics, dict[str, float]]:
    """Metrics of the rows (and per corpus when the data mixes corpora); raise when too many clips failed."""
    from emotionthinker.validation import ValidationFailed

    n_input = len(data.records)
    rate = len(pred.quarantined) / n_input if n_input else 0.0
    if rate > cfg.validation.max_failure_rate:
        raise ValidationFailed(STAGE, rate, cfg.validation.max_failure_rate, pred.failure_reasons)
    metrics = metrics_from_rows(pred.rows)
    flat = metrics.scalars()
    flat["quarantined"] = float(len(pred.quarantined))
    if pred.rows:
        flat["mean_new_tokens"] = sum(r["n_tokens"] for r in pred.rows) / len(pred.rows)
    corpora = sorted({r["corpus"] for r in pred.rows})
    if len(corpora) > 1:
        for c in corpora:
            sub = metrics_from_rows([r for r in pred.rows if r["corpus"] == c])
            flat |= {f"corpus/{c}/uar": sub.uar, f"corpus/{c}/weighted_accuracy": sub.weighted_accuracy}
    return metrics, flat


def judged_rows(rows: list[dict[str, Any]], judges: dict[str, JudgeResult]) -> list[dict[str, Any]]:
    """Rows with one column per judge and criterion (judge_<name>_<FA|IQ|CC|FS>); blank when not scored."""
    out = [dict(r) for r in rows]
    for name, res in judges.items():
        for i, row in enumerate(out):
            scores = res.scores[i] if i < len(res.scores) else None
            for criterion, short in SHORT.items():
                value = scores.get(criterion) if scores else None
                if value is not None or name != "factual" or criterion in ("factual_alignment", "caption_completeness"):
                    row[f"judge_{name}_{short}"] = value
    return out


def log_run(
    cfg: Config,
    info: ModelInfo,
    data: EvalData,
    pred: PredictionResult,
    metrics: ClassificationMetrics,
    flat: dict[str, float],
    judges: dict[str, JudgeResult],
    annotation_counts: dict[str, int] | None = None,
) -> EvaluationOutcome:
    from emotionthinker.promotion import evaluation_tags
    from emotionthinker.tracking import start_stage_run

    all_metrics = dict(flat)
    for res in judges.values():
        all_metrics |= res.metrics()
    rows = judged_rows(pred.rows, judges)
    extra = [k for k in rows[0] if k.startswith("judge_")] if rows else []
    outputs = write_outputs_table(rows, pred.directory, extra)
    tags = {k: v for k, v in evaluation_tags(info.model_name, info.model_version, data.eval_data_version).items() if v != ""}
    tags |= {"benchmark": data.benchmark, "model_source": info.source, "model_label": info.label, "model_kind": info.kind,
             "variant": info.variant, "judges": ",".join(judges), "eval_split": data.split or "all"}  # fmt: skip
    if info.run_id:
        tags["model_run_id"] = info.run_id
    tags = {k: v for k, v in tags.items() if v != ""}
    params = {"model_source": info.source, "manifest": str(data.manifest), "benchmark": data.benchmark,
              "split": data.split or "all", "n_records": len(data.records), "batch_size": pred.batch_size,
              "max_new_tokens": pred.max_new_tokens, "decoding": "greedy", "judges": list(judges),
              "outputs_dir": str(pred.directory), "annotations": annotation_counts or {},
              "judge_info": {k: v.info for k, v in judges.items()}}  # fmt: skip
    params["limit"] = data.limit
    params |= pred.extra  # e.g. the linear probe's training set and mode
    all_metrics["clips_generated"] = float(pred.n_generated)
    all_metrics["predict_wall_s"] = pred.wall_s
    with start_stage_run(cfg, STAGE, params=params, data_version=data.data_version, tags=tags,
                         run_name=f"evaluate-{data.benchmark}-{info.label}".replace(" ", "-")[:200]) as run:  # fmt: skip
        run.log_metrics(all_metrics)
        run.log_table(rows, "outputs.json")
        run.log_artifact(outputs["jsonl"])
        run.log_figure(confusion_figure(metrics.confusion, f"{info.label} on {data.benchmark} (UAR {metrics.uar:.3f})"),
                       "confusion_matrix.png")  # fmt: skip
        run.log_dict(metrics.confusion.as_dict(), "confusion_matrix.json")
        run.log_dict({"metrics": all_metrics, "per_class": metrics.per_class, "data": data.summary(),
                      "model": info.as_dict(), "quarantined": pred.quarantined,
                      "judge_failures": {k: dict(v.failures) for k, v in judges.items()}}, "metrics.json")  # fmt: skip
    return EvaluationOutcome(
        run.run_id, all_metrics, pred.directory, outputs,
        {k: {"means": v.means(), "n_scored": v.n_scored, "failures": dict(v.failures), "info": v.info} for k, v in judges.items()},
    )  # fmt: skip


def run_evaluation(
    cfg: Config,
    model_source: str,
    manifest: str | None = None,
    benchmark: str | None = None,
    judges: list[str] | None = None,
    split: str | None = None,
    limit: int | None = None,
    annotated: str | None = None,
    root: str | None = None,
    variant: str | None = None,
) -> EvaluationOutcome:
    """The evaluate flow's steps without Prefect (for callers already inside a task, e.g. promotion)."""
    from emotionthinker.evaluation.identity import describe_model
    from emotionthinker.evaluation.judges import check_judges, run_judges

    judges = list(cfg.eval.judges if judges is None else judges)
    check_judges(judges, cfg)
    data = prepare_data(cfg, manifest, benchmark, split, limit, root)
    info = describe_model(model_source, cfg, variant)
    directory = run_directory(cfg, info, data)
    pred = predict(cfg, info, data, directory)
    counts: dict[str, int] = {}
    results: dict[str, JudgeResult] = {}
    if judges and pred.rows:
        records = data.records
        if {"factual", "llm"} & set(judges):
            records, counts = attach_annotations(data, cfg, directory, annotated)
        by_id = {r["id"]: r for r in records}
        results = run_judges(judges, pred.rows, [by_id[r["id"]] for r in pred.rows], cfg, directory.parent / "judge_cache.sqlite")
    metrics, flat = score(pred, data, cfg)
    return log_run(cfg, info, data, pred, metrics, flat, results, counts)


def limit_param(value: str | None) -> int | None:
    """An evaluation run's `limit` param back as a number: params are JSON, so "no limit" reads 'null'."""
    if value in (None, "", "null", "None", "0"):
        return None
    return int(value)


def find_eval_data(cfg: Config, eval_data_version: str | None, model_name: str | None = None) -> dict[str, Any]:
    """How an earlier evaluation selected its data (manifest, benchmark, split, limit), found by its version;
    without a version, the newest evaluation of `model_name` (else of any model)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from emotionthinker.evaluation.data import EvalDataError

    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    filters = ["tags.stage = 'evaluate'", "attributes.status = 'FINISHED'"]
    if eval_data_version:
        filters.append(f"tags.eval_data_version = '{eval_data_version}'")
    candidates = [filters + [f"tags.model_name = '{model_name}'"], filters] if model_name and not eval_data_version else [filters]
    for query in candidates:
        runs = client.search_runs(exps, " and ".join(query), order_by=["attributes.start_time DESC"], max_results=50) if exps else []
        for run in runs:
            p = run.data.params
            if run.data.tags.get("model_kind") == "linear_probe" or "manifest" not in p:
                continue
            from emotionthinker.evaluation.data import BENCHMARKS

            bench = p.get("benchmark") if p.get("benchmark") in BENCHMARKS else None  # else named after the manifest
            # Params name files in their stored form: the manifest of another checkout resolves in this one.
            return {"manifest": str(resolve_stored_path(p["manifest"])), "benchmark": bench, "split": p.get("split", "all"),
                    "limit": limit_param(p.get("limit")),
                    "eval_data_version": run.data.tags.get("eval_data_version")}  # fmt: skip
    raise EvalDataError(f"no earlier evaluation on data {eval_data_version or '(any)'} to take the clip selection from")
