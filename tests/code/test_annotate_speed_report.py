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
