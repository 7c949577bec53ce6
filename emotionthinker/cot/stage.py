"""The CoT stage as the flow runs it: reasoning -> GX -> RM tuples -> GX -> files for DVC -> MLflow."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotionthinker import locks
from emotionthinker.config import Config
from emotionthinker.records import append_jsonl, read_input_jsonl, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from emotionthinker.cot.writer import CotReport
    from emotionthinker.validation import ValidationReport


@dataclass
class CotStageResult:
    directory: Path
    cot: Path
    rm_tuples: Path
    quarantine: Path
    report: "CotReport"
    cot_validation: "ValidationReport"
    rm_summary: dict[str, Any]
    rm_validation: "ValidationReport"


def cot_dir(cfg: Config, annotated: Path) -> Path:
    """<data>/cot/<name>/ named after the annotated dataset's folder."""
    return cfg.data_dir / "cot" / annotated.parent.name


def output_lock(out_dir: Path, cfg: Config) -> AbstractContextManager[None]:
    """One process writes a CoT folder at a time (see locks.output_lock): two would pay the LLM twice."""
    return locks.output_lock(locks.workspace_lock(cfg.workspace, "cot", out_dir), f"writing reasoning into {out_dir}",
                             "the records it wrote are then reused")  # fmt: skip


def run_cot_stage(annotated: Path, cfg: Config, out_dir: Path | None = None) -> CotStageResult:
    """Write reasoning, validate it, build and validate RM tuples; rows failing GX go to the quarantine."""
    from emotionthinker.cot import write_cot, write_rm_tuples
    from emotionthinker.cot.validation import validate_cot_records, validate_rm_tuples

    out_dir = Path(out_dir) if out_dir else cot_dir(cfg, annotated)
    out_dir.mkdir(parents=True, exist_ok=True)
    cot_path, rm_path, quarantine = out_dir / "emotion_cot.jsonl", out_dir / "rm_tuples.jsonl", out_dir / "quarantine.jsonl"
    report = write_cot(read_input_jsonl(annotated), cot_path, cfg, progress=True)
    cot_validation = validate_cot_records(read_jsonl(cot_path), cfg)
    _keep_valid(cot_path, cot_validation, quarantine)
    rm_summary = write_rm_tuples(cot_path, rm_path, cfg)
    rm_validation = validate_rm_tuples(read_jsonl(rm_path), cfg)
    _keep_valid(rm_path, rm_validation, quarantine)
    return CotStageResult(out_dir, cot_path, rm_path, quarantine, report, cot_validation, rm_summary, rm_validation)


def _keep_valid(path: Path, validation: "ValidationReport", quarantine: Path) -> None:
    if validation.quarantined:
        write_jsonl(path, validation.valid)
        for q in validation.quarantined:
            append_jsonl(quarantine, q)


def plot_histogram(histogram: dict[str, dict[int, int]]) -> "Figure":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histogram), figsize=(3 * len(histogram), 2.6), sharey=True, squeeze=False)
    for ax, (criterion, hist) in zip(axes[0], histogram.items()):
        ax.bar([1, 2, 3, 4, 5], [hist.get(k, hist.get(str(k), 0)) for k in range(1, 6)], color="tab:blue")
        ax.set_title(criterion.replace("_", " "), fontsize=8)
        ax.set_xlabel("score")
    axes[0, 0].set_ylabel("tuples")
    fig.tight_layout()
    return fig


def log_cot_run(cfg: Config, annotated: Path, res: CotStageResult, data_version: dict[str, str] | None) -> str:
    import pandas as pd

    from emotionthinker.cot.writer import sample_table
    from emotionthinker.tracking import start_stage_run
    from emotionthinker.validation import results_payload

    params = {"annotated": str(annotated), "writer": res.report.writer, "model": res.report.model,
              "prompt_version": res.report.prompt_version, "base_url_set": bool(cfg.cot.base_url),
              "rm_data": cfg.rm_data.model_dump(mode="json")}  # fmt: skip
    with start_stage_run(cfg, "cot", params, data_version, run_name="cot") as run:
        run.log_metrics({**res.report.metrics(), "cot_valid": len(res.cot_validation.valid),
                         "cot_quarantined": len(res.cot_validation.quarantined), "rm_tuples": res.rm_summary["n_tuples"],
                         "rm_off_target": res.rm_summary["n_off_target"], "rm_quarantined": len(res.rm_validation.quarantined)})  # fmt: skip
        run.log_dict(res.report.to_dict(), "cot/report.json")
        run.log_table(pd.DataFrame(sample_table(read_jsonl(res.cot))), "cot/samples.json")
        run.log_dict({k: {str(lv): n for lv, n in h.items()} for k, h in res.rm_summary["histogram"].items()},
                     "rm_data/score_histogram.json")  # fmt: skip
        run.log_figure(plot_histogram(res.rm_summary["histogram"]), "rm_data/score_histogram.png")
        run.log_dict(results_payload(res.cot_validation), "validation/gx_cot.json")
        run.log_dict(results_payload(res.rm_validation), "validation/gx_rm_tuples.json")
        return run.run_id
