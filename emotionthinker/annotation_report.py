"""Validation, plots and MLflow logging of the annotation stage (the flow calls these)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotionthinker.config import Config
from emotionthinker.validation import ValidationReport, register_suite, validate_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEVEL_VALUES = {
    "pitch_level": ["low", "normal", "high", "unknown"],
    "energy_level": ["low", "normal", "high"],
    "speed_level": ["slow", "normal", "fast"],
}
INTONATION_VALUES = ["rising", "falling", "rising-falling", "falling-rising", "flat", "expressive", "uncertain", "too_short"]
AGE_VALUES = ["Child", "Teenager", "Young Adult", "Middle-aged", "Elderly", "unknown"]
# Below this share of a corpus a level value is worth a warning: tertiles should give about 1/3 each.
BALANCE_WARN_SHARE = 0.15


def flatten_annotated(rec: dict[str, Any]) -> dict[str, Any]:
    """One flat row per record for GX: annotations and raw measures side by side."""
    row = {k: rec.get(k) for k in ("id", "audio_path", "corpus", "split", "speaker", "emotion", "transcription")}
    row.update({f"ann_{k}": v for k, v in (rec.get("annotations") or {}).items() if k != "stressed_words"})
    row["ann_n_stressed"] = len((rec.get("annotations") or {}).get("stressed_words") or [])
    row.update({f"p_{k}": v for k, v in (rec.get("prosody") or {}).items() if not isinstance(v, (dict, list))})
    return row


@register_suite("annotated")
def annotated_expectations(cfg: Config) -> list[Any]:
    """Allowed values, physical ranges and nulls for annotated records."""
    import great_expectations.expectations as gxe

    p = cfg.prosody
    exps: list[Any] = [gxe.ExpectColumnValuesToBeUnique(column="id")]
    for name, values in LEVEL_VALUES.items():
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=f"ann_{name}"))
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=f"ann_{name}", value_set=values))
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="ann_intonation", value_set=INTONATION_VALUES),
        gxe.ExpectColumnValuesToBeInSet(column="ann_gender", value_set=["Male", "Female"]),
        gxe.ExpectColumnValuesToBeInSet(column="ann_age_level", value_set=AGE_VALUES),
        gxe.ExpectColumnValuesToBeBetween(column="p_f0_median_hz", min_value=p.f0_floor_hz, max_value=p.f0_ceiling_hz),
        gxe.ExpectColumnValuesToBeBetween(column="p_rms_dbfs", min_value=-100.0, max_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="p_voiced_fraction", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="p_articulation_rate_sps", min_value=0.0, max_value=15.0),
        gxe.ExpectColumnValuesToNotBeNull(column="p_rms_dbfs"),
        gxe.ExpectColumnValuesToNotBeNull(column="p_duration_s"),
        gxe.ExpectColumnValuesToBeBetween(column="ann_n_stressed", min_value=0, max_value=10),
    ]
    return exps


def validate_annotated(records: list[dict[str, Any]], cfg: Config) -> ValidationReport:
    rows = [flatten_annotated(r) for r in records]
    report = validate_table(rows, "annotated", cfg, stage="validate-annotated")
    keep = {r["id"] for r in report.valid}
    report.valid = [r for r in records if r["id"] in keep]  # hand back the full records, not the flat rows
    return report


def level_distributions(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """corpus -> attribute -> value -> count, for every annotation label."""
    out: dict[str, dict[str, Counter]] = {}
    for rec in records:
        per = out.setdefault(rec["corpus"], {})
        for key in [*LEVEL_VALUES, "intonation", "gender", "age_level"]:
            per.setdefault(key, Counter())[str(rec["annotations"].get(key))] += 1
    return {c: {k: dict(v) for k, v in d.items()} for c, d in out.items()}


def balance_warnings(dist: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    """Per-corpus label balance warnings (warnings, not failures: a corpus can be skewed for real)."""
    warnings = []
    for corpus, attrs in dist.items():
        for attr in LEVEL_VALUES:
            counts = attrs.get(attr, {})
            total = sum(counts.values())
            for value in LEVEL_VALUES[attr][:3]:
                share = counts.get(value, 0) / total if total else 0.0
                if total and share < BALANCE_WARN_SHARE:
                    warnings.append(f"{corpus}: {attr}={value} is {share:.0%} of {total} clips")
    return warnings


def plot_contours(records: list[dict[str, Any]], cfg: Config, n: int = 6) -> "Figure":
    """F0 and energy contours of a few clips (one per emotion where possible) with their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from emotionthinker.audio import load_audio
    from emotionthinker.prosody.intonation import smooth_contour
    from emotionthinker.prosody.measures import measure_prosody

    picked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rec in records:
        if rec["emotion"] not in seen:
            picked.append(rec)
            seen.add(rec["emotion"])
        if len(picked) == n:
            break
    fig, axes = plt.subplots(len(picked) or 1, 1, figsize=(9, 2.2 * max(1, len(picked))), squeeze=False)
    for ax, rec in zip(axes[:, 0], picked):
        y = load_audio(rec["audio_path"], cfg.audio)
        m = measure_prosody(y, cfg.audio.sample_rate, cfg.prosody)
        voiced = np.isfinite(m.f0_hz)
        st = 12 * np.log2(m.f0_hz[voiced] / 100.0)
        ax.plot(m.f0_times[voiced], st, ".", ms=2, color="tab:blue", label="F0 (st re 100 Hz)")
        if voiced.sum() >= cfg.prosody.smooth_window:
            ax.plot(m.f0_times[voiced], smooth_contour(st, cfg.prosody), color="tab:blue", lw=1.5)
        ax2 = ax.twinx()
        ax2.plot(m.energy_times, m.energy_dbfs, color="tab:orange", lw=0.8, alpha=0.7)
        ax2.set_ylabel("dBFS", fontsize=7)
        a = rec["annotations"]
        ax.set_title(
            f"{rec['id']} [{rec['emotion']}] pitch={a['pitch_level']} energy={a['energy_level']} "
            f"speed={a['speed_level']} intonation={a['intonation']} stress={a['stressed_words']}",
            fontsize=7,
        )
        ax.set_ylabel("st", fontsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def log_annotate_run(
    cfg: Config,
    manifest: Path,
    report: Any,
    validation: ValidationReport,
    data_version: dict[str, str] | None,
    use_asr: bool,
    failed: Exception | None = None,
) -> str:
    """One MLflow run: params, counts, speed, label distributions, thresholds, contour plots, GX results.

    With `failed` (the error that stops the flow) the run is recorded as FAILED with the same artifacts.
    """
    import json

    import pandas as pd

    from emotionthinker.tracking import metric_key, start_stage_run
    from emotionthinker.validation import results_payload

    params = {
        "manifest": str(manifest),
        "use_asr": use_asr,
        "asr_source": cfg.asr.source if use_asr else "none",
        "stress_detector": cfg.asr.stress_detector,
        "prosody": cfg.prosody.model_dump(mode="json"),
        # Word timing and stress settings (threshold, cue weights, F0 baseline) and the trait models:
        # runs that differ there differ in their labels, so the comparison view must show them.
        "asr": cfg.asr.model_dump(mode="json"),
        "traits": cfg.traits.model_dump(mode="json"),
    }
    dist = level_distributions(validation.valid)
    try:
        with start_stage_run(cfg, "annotate", params, data_version, run_name="annotate") as run:
            run.log_metrics(
                {
                    "records_in": report.n_input,
                    "records_annotated": len(validation.valid),
                    "quarantined_annotate": report.n_quarantined,
                    "quarantined_validate": len(validation.quarantined),
                    "resumed": report.n_resumed,
                    "audio_seconds": report.audio_seconds,
                    "wall_seconds": report.wall_seconds,
                    "x_realtime": report.realtime_factor,
                }
            )
            run.log_metrics({metric_key(f"label.{corpus}.{attr}.{value}"): n for corpus, attrs in dist.items()
                             for attr, counts in attrs.items() for value, n in counts.items()})
            run.log_dict(dist, "annotate/label_distributions.json")
            run.log_dict({"warnings": balance_warnings(dist)}, "annotate/balance_warnings.json")
            if Path(report.calibration).is_file():  # absent when every clip was quarantined
                run.log_dict(json.loads(Path(report.calibration).read_text()), "annotate/calibration.json")
            run.log_dict(results_payload(validation), "validation/gx_results.json")
            q = quarantine_rows(report.quarantine, validation)
            if q:
                run.log_table(pd.DataFrame(q), "annotate/quarantine.json")
            sample = [flatten_annotated(r) for r in validation.valid[:50]]
            if sample:
                run.log_table(pd.DataFrame(sample), "annotate/sample_annotations.json")
                run.log_figure(plot_contours(validation.valid, cfg), "annotate/f0_contours.png")
            if failed is not None:
                raise failed  # start_stage_run marks the run FAILED with the error
    except BaseException as exc:
        if exc is not failed:
            raise
    return run.run_id


def quarantine_rows(path: Path, validation: ValidationReport) -> list[dict[str, Any]]:
    """Quarantined clips of this run, once each: the annotate quarantine file (to which the flow has
    already appended the GX rejects) plus any GX reject not written there."""
    rows = {(q["id"], q["stage"]): dict(q) for q in _read(path)}
    for q in validation.quarantined:
        rows.setdefault((q.id, q.stage), q.model_dump(mode="json"))
    return list(rows.values())


def _read(path: Path) -> list[dict[str, Any]]:
    from emotionthinker.records import read_jsonl

    return read_jsonl(path)
