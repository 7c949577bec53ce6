"""Great Expectations suites for EmotionCoT records and reward-model tuples."""

from __future__ import annotations

import copy

import pytest

from emotionthinker.cot import build_rm_tuples, write_cot
from emotionthinker.cot.records import make_target
from emotionthinker.cot.validation import validate_cot_records, validate_rm_tuples
from emotionthinker.records import read_jsonl

ANN = {"pitch_level": "high", "energy_level": "high", "speed_level": "fast", "stressed_words": ["door"],
       "intonation": "rising", "gender": "Female", "age_level": "Young Adult"}


@pytest.fixture
def cot_records(cfg, tmp_path):
    recs = [{"id": f"r{i}", "audio_path": f"/c/{i}.wav", "corpus": "c", "split": "train", "speaker": f"s{i % 3}",
             "gender": "female", "emotion": ["surprise", "happy", "fear"][i % 3], "source_label": "x",
             "transcription": "Kids are talking by the door.", "annotations": dict(ANN)} for i in range(9)]
    write_cot(recs, tmp_path / "cot.jsonl", cfg)
    return read_jsonl(tmp_path / "cot.jsonl")


def test_cot_suite_accepts_composer_output_and_quarantines_each_defect(cfg, cot_records):
    ok = validate_cot_records(cot_records, cfg)
    assert ok.failure_rate == 0 and len(ok.valid) == 9, [q.reason for q in ok.quarantined]

    bad = copy.deepcopy(cot_records)
    bad[0]["target"] = bad[0]["target"].replace("<answer>", "<answer>very ")  # answer not a label
    bad[1]["reasoning"] = "Happiness is obvious. " + bad[1]["reasoning"]  # r1 is 'happy': opens with the label
    bad[2]["reasoning"] = bad[2]["reasoning"].replace("door", "window")  # transcript no longer quoted
    bad[3]["reasoning"] = bad[3]["reasoning"].replace("woman", "man")  # the annotation says Female
    bad[4]["annotations"]["pitch_level"] = "extreme"
    bad[5]["reasoning"] = "Too short."
    for rec in bad[1:6]:  # keep the target consistent so that only the intended defect fires
        rec["target"] = make_target(rec["reasoning"], rec["emotion"])
    bad[6]["split"] = "holdout"
    bad[7]["id"] = bad[8]["id"]  # duplicated id
    rep = validate_cot_records(bad, cfg)
    reasons = {q.id: q.reason for q in rep.quarantined}
    assert "target" in reasons["r0"]
    assert all("target" not in reasons[i] for i in ("r1", "r2", "r3", "r4", "r5"))
    assert "opens_with_label" in reasons["r1"]
    assert "mentions_transcript" in reasons["r2"]
    assert "contradicted_claims" in reasons["r3"]  # the parser caught the wrong gender
    assert "pitch_level" in reasons["r4"]
    assert "word_count" in reasons["r5"]
    assert "split" in reasons["r6"]
    assert "duplicated" in reasons["r8"]
    assert rep.valid == []


def test_rm_tuple_suite(cfg, cot_records):
    cfg.rm_data.variants_per_record = 2
    tuples = build_rm_tuples(cot_records, cfg)
    assert validate_rm_tuples(tuples, cfg).failure_rate == 0
    broken = copy.deepcopy(tuples)
    broken[0]["g"]["fluency_and_structural_clarity"] = 4  # a gold tuple that is not (5,5,5,5)
    broken[1]["g"]["factual_alignment"] = 7
    broken[2]["r"] = ""
    rep = validate_rm_tuples(broken, cfg)
    reasons = {q.id: q.reason for q in rep.quarantined}
    assert set(reasons) == {broken[0]["id"], broken[1]["id"], broken[2]["id"]}
    assert "gold_is_perfect" in reasons[broken[0]["id"]] and "g_factual_alignment" in reasons[broken[1]["id"]]
