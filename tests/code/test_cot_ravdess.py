"""CoT writer and reward-model tuples on real RAVDESS clips annotated by the platform's own annotator.

Records come from the file names (emotion, actor parity -> gender, statement text) through the
RAVDESS adapter; pitch/energy/speed levels and the intonation are measured with the prosody
package (Praat via parselmouth) and calibrated over the 120 clips. Word stress needs word timings
(espeak-ng alignment, ~0.2 s a clip), so only every 10th clip gets it, to keep the suite fast.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from emotionthinker.config import load_config
from emotionthinker.cot import build_rm_tuples, score_histogram, write_cot
from emotionthinker.cot import lexicon as lx
from emotionthinker.cot.checks import (
    check_response,
    fact_check,
    sentence_skeleton,
    sentences_naming_label,
    split_sentences,
)
from emotionthinker.cot.degrade import DEGRADERS, changed_criteria
from emotionthinker.cot.offline import record_rng
from emotionthinker.cot.prompt import CRITERIA
from emotionthinker.records import read_jsonl
from tests.conftest import RAVDESS_DIR, requires_ravdess

pytestmark = [requires_ravdess, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def ravdess_cfg(tmp_path_factory):
    ws = tmp_path_factory.mktemp("cot-ravdess")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    return load_config("test", environ=env, overrides={"paths": {"workspace": str(ws / "ws"), "data": str(ws / "data")}})


@pytest.fixture(scope="module")
def annotated(ravdess_cfg):
    from emotionthinker.annotate import apply_levels
    from emotionthinker.clip_annotation import measure_record
    from emotionthinker.corpora import build_manifest
    from emotionthinker.prosody.levels import fit_calibration_from_records

    manifest = [r.model_dump(mode="json") for r in build_manifest("ravdess", RAVDESS_DIR, ravdess_cfg).records]
    assert len(manifest) == 120
    measured = [measure_record(rec, ravdess_cfg, use_asr=(i % 10 == 0)) for i, rec in enumerate(manifest)]
    calibration = fit_calibration_from_records(measured, ravdess_cfg)
    out = [rec for status, rec in apply_levels(measured, calibration) if status == "ok"]
    assert len(out) == 120
    return out


@pytest.fixture(scope="module")
def cot_records(annotated, ravdess_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("cot-out") / "cot.jsonl"
    report = write_cot(annotated, out, ravdess_cfg)
    assert report.n_written == 120 and report.n_errors == 0
    return read_jsonl(out)


def test_offline_reasoning_never_contradicts_the_measured_annotation(cot_records):
    stress_seen = Counter()
    for rec in cot_records:
        fc = fact_check(rec["reasoning"], rec)
        bad = [(v.claim.attribute, v.claim.surface, v.status, v.expected) for v in fc.verdicts if v.status != "supported"]
        assert not bad, (rec["id"], rec["annotations"], rec["reasoning"])
        ann = rec["annotations"]
        mentioned = fc.attributes_mentioned
        assert {"pitch_level", "energy_level", "speed_level", "gender", "transcript"} <= mentioned
        assert ("intonation" in mentioned) == (ann["intonation"] in lx.INTONATIONS)
        assert ("stressed_words" in mentioned) == bool(ann["stressed_words"])
        assert "age_level" not in mentioned  # no age model configured: age is 'unknown'
        stress_seen[bool(ann["stressed_words"])] += 1
        assert check_response(rec["reasoning"], rec) == []
        assert sentences_naming_label(rec["reasoning"], rec["emotion"]) == [len(split_sentences(rec["reasoning"])) - 1]
    assert stress_seen[True] >= 3  # the real stress annotations were exercised too


def test_at_least_twenty_sentence_structures(cot_records):
    skeletons = {sentence_skeleton(s.text) for rec in cot_records for s in split_sentences(rec["reasoning"])}
    openings = {" ".join(sentence_skeleton(s.text).split()[:3]) for rec in cot_records
                for s in split_sentences(rec["reasoning"])}
    assert len(skeletons) >= 20 and len(openings) >= 20, (len(skeletons), len(openings))


def test_split_by_speaker(cot_records):
    splits = {rec["speaker"]: set() for rec in cot_records}
    for rec in cot_records:
        splits[rec["speaker"]].add(rec["split"])
    assert all(len(s) == 1 for s in splits.values()), splits  # no speaker on both sides
    assert sorted(next(iter(s)) for s in splits.values()) == ["train", "validation"]


def test_rm_tuples_cover_every_level_of_every_criterion(cot_records, ravdess_cfg):
    tuples = build_rm_tuples(cot_records, ravdess_cfg)
    assert len(tuples) == 120 * (1 + ravdess_cfg.rm_data.variants_per_record)
    hist = score_histogram(tuples)
    degraded = score_histogram([t for t in tuples if t["kind"] != "gold"])
    for c in CRITERIA:
        assert all(hist[c][lv] >= 40 for lv in range(1, 5)), (c, hist[c])  # ~96 expected per level
        assert degraded[c][5] >= 40, (c, degraded[c])  # variants left intact on this criterion, beside the 120 gold


def test_degradations_are_independent_on_real_annotations(cot_records):
    for rec in cot_records[::4]:
        gold = rec["reasoning"]
        for criterion, fn in DEGRADERS.items():
            for level in (1, 3):
                step = fn(gold, rec, level, record_rng(rec["id"], 0, criterion))
                assert changed_criteria(gold, step.text, rec) == {criterion}, (criterion, level, step.ops, step.text)
