"""Benchmark evaluation (DESIGN.md stage 8): batched prediction over a manifest, emotion metrics, reasoning
judges, the Table-2 / Table-4 comparison tables, the linear-probe baseline and single-clip inference.

Modules: `metrics` (pure numbers), `data` (benchmarks, record selection, data versions), `predict`
(batched, resumable generation), `judges` (LLM, reward model, deterministic factual check), `report`
(one MLflow run per evaluation), `tables`, `baselines`, `infer`.
"""

from __future__ import annotations

from typing import Any


def evaluate_model_version(cfg, model_name: str, version: str, eval_data_version: str | None) -> Any:
    """Evaluate `registry:<model_name>@<version>` on the data of an earlier evaluation (the promotion gate's
    entry point, flows/promote.py): the clip selection is re-derived from that run and must give the same
    eval_data_version, so the two versions are compared on the same clips."""
    from emotionthinker.evaluation.data import EvalDataError
    from emotionthinker.evaluation.report import find_eval_data, prepare_data, run_evaluation

    found = find_eval_data(cfg, eval_data_version, model_name)
    data = prepare_data(cfg, found["manifest"], found["benchmark"], found["split"], found["limit"])
    if eval_data_version and data.eval_data_version != eval_data_version:
        raise EvalDataError(f"the manifest {found['manifest']} changed: it now selects {data.eval_data_version}, "
                            f"not {eval_data_version}")  # fmt: skip
    return run_evaluation(cfg, f"registry:{model_name}@{version}", found["manifest"], found["benchmark"],
                          split=found["split"], limit=found["limit"])  # fmt: skip
