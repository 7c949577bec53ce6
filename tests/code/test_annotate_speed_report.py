"""The agreement report of benchmarks/annotate_speed.py (a script, loaded from its file)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[2] / "benchmarks" / "annotate_speed.py"
_spec = importlib.util.spec_from_file_location("annotate_speed", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("annotate_speed", bench)  # dataclasses look their module up there
_spec.loader.exec_module(bench)


def test_wilson_interval_matches_the_textbook_values():
    assert bench.wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    lo, hi = bench.wilson_interval(1.0, 108)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.9657, abs=1e-4)  # never above 1, unlike p +- 1.96 se


def test_design_agreement_scores_each_annotator_against_the_design_and_skips_unlabelled_clips():
    records = [{"design_pitch_level": d} for d in ("low", "high", "normal", None)]
    dsp = [{"pitch_level": x} for x in ("low", "high", "high", "low")]
    pyin = [{"pitch_level": x} for x in ("low", None, "normal", "low")]  # None: no F0 found
    [line] = bench.design_agreement(records, {"DSP": dsp, "pYIN": pyin})
    assert line.startswith("pitch_level") and "DSP 2/3 (66.7%)" in line and "pYIN 2/2 (100.0%)" in line
    assert bench.design_agreement([{"id": 1}], {"DSP": [{}]}) == []  # a corpus without a design: no section


def test_one_shared_calibration_counts_a_clip_that_crosses_an_edge_once(cfg):
    """Each annotator fitting its own tertiles turns one clip crossing an edge into two disagreements (its
    neighbour is pushed back across); labelled with the DSP's thresholds only the clip itself differs."""
    from emotionthinker.prosody.levels import fit_calibration

    records = [{"corpus": "r", "gender": "female"} for _ in range(9)]

    def measures(pitch):
        return [{"f0_median_st": p, "rms_dbfs": -20.0 - i, "articulation_rate_sps": 3.0 + i} for i, p in enumerate(pitch)]

    dsp = measures([0, 1, 2, 3, 4, 5, 6, 7, 8])
    pyin = measures([0, 1, 3.5, 3, 4, 5, 6, 7, 8])  # clip 2 measured higher, past clip 3
    dsp_levels = bench.levels_from_measures(records, dsp, cfg)
    own = bench.levels_from_measures(records, pyin, cfg)
    shared = bench.levels_from_measures(records, pyin, cfg, fit_calibration([("r", "female", m) for m in dsp], cfg))
    differ = [[i for i, (a, b) in enumerate(zip(dsp_levels, x)) if a["pitch_level"] != b["pitch_level"]] for x in (own, shared)]
    assert differ == [[2, 3], [2]]
    assert bench.agreement(dsp_levels, shared)["pitch_level"] == (pytest.approx(8 / 9), 9)
