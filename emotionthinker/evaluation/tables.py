"""Comparison tables from the MLflow evaluation runs, beside the paper's published numbers.

Table 2 layout: one row per model (this project's models, then the paper's rows from
paper_reference.json with their source), accuracy = UAR in % per benchmark (the paper's four, then any
other benchmark this project evaluated), and the four reasoning scores of one judge. For this
project's rows 'Avg' is the plain mean over the paper benchmarks evaluated, marked (k/4) when fewer
than four; the paper's 'Avg' is copied as printed.

Table 4 layout: one row per training variant (evaluation tag `variant`, see evaluation/identity.py):
mean UAR over the benchmarks the variant's model was evaluated on and its mean reasoning score,
beside the paper's ablation numbers. The newest finished evaluation run per (model, benchmark) counts;
judge scores it lacks come from the newest older run on the same clips that has them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.evaluation.data import BENCHMARKS, PAPER_BENCHMARKS, eval_root
from emotionthinker.evaluation.identity import VARIANTS
from emotionthinker.evaluation.judges import SHORT
from models.rewards import CRITERIA

REFERENCE_FILE = Path(__file__).with_name("paper_reference.json")
DASH = "–"


def paper_reference() -> dict[str, Any]:
    return json.loads(REFERENCE_FILE.read_text())


@dataclass
class EvalRun:
    run_id: str
    label: str
    kind: str
    variant: str
    benchmark: str
    profile: str
    start_time: int
    metrics: dict[str, float] = field(default_factory=dict)

    def judge_scores(self, judge: str) -> dict[str, float]:
        return {c: self.metrics[f"judge/{judge}/{c}"] for c in CRITERIA if f"judge/{judge}/{c}" in self.metrics}


def collect_runs(cfg: Config) -> list[EvalRun]:
    """The newest FINISHED evaluation run per (model label, benchmark), in the configured store."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not exps:
        return []
    runs = client.search_runs(exps, "tags.stage = 'evaluate' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)  # fmt: skip
    newest: dict[tuple[str, str], EvalRun] = {}
    data_of: dict[tuple[str, str], str] = {}
    for r in runs:  # newest first
        t = r.data.tags
        if "benchmark" not in t or "uar" not in r.data.metrics:
            continue
        label = t.get("model_label") or t.get("model_source", "?")
        key = (label, t["benchmark"])
        if key not in newest:
            newest[key] = EvalRun(r.info.run_id, label, t.get("model_kind", ""), t.get("variant", ""), t["benchmark"],
                                  t.get("profile", ""), r.info.start_time, dict(r.data.metrics))  # fmt: skip
            data_of[key] = t.get("eval_data_version", "")
        elif t.get("eval_data_version", "") == data_of[key]:
            # A newer run without a judge (e.g. accuracy only) keeps the judge scores of an older run on the same clips.
            for k, v in r.data.metrics.items():
                if k.startswith("judge/"):
                    newest[key].metrics.setdefault(k, v)
    return sorted(newest.values(), key=lambda e: (e.start_time, e.label))


def _fmt(x: float | None, digits: int = 2) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def model_reasoning(runs: list[EvalRun], judge_order: list[str]) -> tuple[str, dict[str, float]]:
    """(judge, criterion -> mean over the runs it scored) for the first judge in `judge_order` present."""
    for judge in judge_order:
        per: dict[str, list[float]] = defaultdict(list)
        for r in runs:
            for c, v in r.judge_scores(judge).items():
                per[c].append(v)
        if per:
            return judge, {c: sum(v) / len(v) for c, v in per.items()}
    return "", {}


def _avg_cell(by_bench: dict[str, float]) -> str:
    present = [by_bench[b] for b in PAPER_BENCHMARKS if b in by_bench]
    if not present:
        return DASH
    cell = _fmt(100 * sum(present) / len(present))
    return cell if len(present) == len(PAPER_BENCHMARKS) else f"{cell} ({len(present)}/{len(PAPER_BENCHMARKS)})"


def table2_rows(runs: list[EvalRun], judge_order: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (ours first, then the paper's) of the Table-2 layout."""
    ref = paper_reference()["table2"]
    extra = [b for b in BENCHMARKS if b not in PAPER_BENCHMARKS and any(r.benchmark == b for r in runs)]
    others = sorted({r.benchmark for r in runs} - set(BENCHMARKS))  # manifests evaluated under their own name
    bench_cols = list(PAPER_BENCHMARKS) + extra + others
    title = {b: BENCHMARKS[b].title if b in BENCHMARKS else b for b in bench_cols}
    header = ["Model", "Source"] + [title[b] for b in PAPER_BENCHMARKS] + ["Avg"] + [title[b] for b in extra + others]
    header += ["Judge"] + [SHORT[c] for c in CRITERIA] + ["Avg"]
    rows: list[list[str]] = []
    by_model: dict[str, list[EvalRun]] = defaultdict(list)
    for r in runs:
        by_model[r.label].append(r)
    for label, model_runs in by_model.items():
        acc = {r.benchmark: r.metrics["uar"] for r in model_runs}
        judge, scores = model_reasoning(model_runs, judge_order)
        profile = ",".join(sorted({r.profile for r in model_runs if r.profile})) or "?"
        kind = "linear probe" if model_runs[0].kind == "linear_probe" else "this project"
        row = [label, f"{kind} ({profile})"] + [_fmt(100 * acc[b]) if b in acc else DASH for b in PAPER_BENCHMARKS]
        row += [_avg_cell(acc)] + [_fmt(100 * acc[b]) if b in acc else DASH for b in extra + others]
        row += [judge or DASH] + [_fmt(scores.get(c)) for c in CRITERIA] + [_fmt(_mean(list(scores.values())))]
        rows.append(row)
    for p in ref["rows"]:
        a, s = p["accuracy"], p["reasoning"]
        row = [p["model"], "paper"] + [_fmt(v) for v in a[:4]] + [_fmt(a[4])] + [DASH] * len(extra + others)
        row += ["paper LLM judge"] + [_fmt(v) for v in s[:4]] + [_fmt(s[4])]
        rows.append(row)
    return header, rows


def table4_rows(runs: list[EvalRun], judge_order: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the ablation table: one per variant, ours beside the paper's."""
    ref = {r["variant"]: r for r in paper_reference()["table4"]["rows"]}
    header = ["Variant", "Paper row", "Paper avg acc", "Paper reasoning", "Our model", "Benchmarks", "Our avg UAR",
              "Judge", "Our reasoning"]  # fmt: skip
    rows = []
    for variant in VARIANTS:
        mine = [r for r in runs if r.variant == variant and r.kind != "linear_probe"]
        p = ref.get(variant, {})
        paper_cells = [p.get("name", DASH), _fmt(p.get("avg_accuracy")), _fmt(p.get("reasoning"))]
        if not mine:
            rows.append([variant] + paper_cells + [DASH] * 5)
            continue
        label = mine[-1].label  # newest model of this variant
        model_runs = [r for r in mine if r.label == label]
        uar = _mean([r.metrics["uar"] for r in model_runs])
        judge, scores = model_reasoning(model_runs, judge_order)
        rows.append([variant] + paper_cells + [label, ", ".join(sorted(r.benchmark for r in model_runs)),
                     _fmt(100 * uar if uar is not None else None), judge or DASH, _fmt(_mean(list(scores.values())))])  # fmt: skip
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_tables(runs: list[EvalRun], judge_order: list[str]) -> dict[str, str]:
    src = paper_reference()["source"]
    note = (f"Paper numbers: {src['paper']} ({src['transcribed_from']}). {src['protocol']}\n"
            "This project's accuracy: UAR (%) of the newest finished evaluation run per model and benchmark; "
            "its reasoning columns come from the judge named in the row (the factual judge scores FA and CC only).")  # fmt: skip
    t2 = markdown_table(*table2_rows(runs, judge_order))
    t4 = markdown_table(*table4_rows(runs, judge_order))
    return {
        "table2": f"## Table 2 layout: emotion accuracy and reasoning quality\n\n{t2}\n\n{note}\n",
        "table4": f"## Table 4 layout: ablations of the training recipe\n\n{t4}\n\n{note}\n",
    }


def write_tables(cfg: Config, out_dir: str | Path | None = None, log_to_mlflow: bool = True) -> dict[str, Any]:
    """Render both tables from the MLflow runs, write Markdown files, and log them as artifacts of a run."""
    runs = collect_runs(cfg)
    tables = render_tables(runs, list(cfg.eval.table_judge_order))
    out = Path(out_dir) if out_dir else eval_root(cfg) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in tables.items():
        paths[name] = out / f"{name}.md"
        paths[name].write_text(text)
    combined = out / "tables.md"
    combined.write_text("# EmotionThinker evaluation tables\n\n" + "\n".join(tables.values()))
    run_id = None
    if log_to_mlflow:
        from emotionthinker.tracking import start_stage_run

        with start_stage_run(cfg, "tables", params={"n_eval_runs": len(runs)}, run_name="tables") as run:
            for p in [*paths.values(), combined]:
                run.log_artifact(p, "tables")
            run.log_dict({"eval_runs": [r.run_id for r in runs]}, "tables/sources.json")
            run_id = run.run_id
    return {"paths": {k: str(v) for k, v in paths.items()} | {"tables": str(combined)}, "run_id": run_id,
            "n_runs": len(runs), "markdown": tables}  # fmt: skip
