"""The GX suite for annotated records: good rows pass, each bad value quarantines its row with the
failing expectation named in the reason, and per-corpus label balance is reported as warnings."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from emotionthinker.annotation_report import balance_warnings, level_distributions, validate_annotated

LEVELS = [("low", "low", "slow"), ("normal", "normal", "normal"), ("high", "high", "fast")]


def annotated(i: int, pitch: str = "normal", energy: str = "normal", speed: str = "normal", **over: Any) -> dict[str, Any]:
    """An annotated record as the annotate stage writes it (values of a typical RAVDESS clip)."""
    rec = {
        "id": f"ravdess-clip-{i:03d}",
        "audio_path": f"/data/ravdess/Actor_01/03-01-01-01-01-01-{i:03d}.wav",
        "corpus": "ravdess",
        "split": "train",
        "speaker": "ravdess-01",
        "gender": "male",
        "emotion": "neutral",
        "source_label": "neutral",
        "transcription": "Kids are talking by the door",
        "duration_s": 3.4,
        "transcription_source": "corpus",
        "annotations": {
            "pitch_level": pitch,
            "energy_level": energy,
            "speed_level": speed,
            "stressed_words": ["Kids"],
            "intonation": "falling",
            "gender": "Male",
            "age_level": "unknown",
        },
        "prosody": {
            "f0_median_hz": 118.2, "f0_median_st": 2.9, "f0_range_st": 6.1, "rms_dbfs": -31.5,
            "voiced_fraction": 0.62, "speech_rate_sps": 2.3, "articulation_rate_sps": 4.4, "duration_s": 3.4,
            "speech_duration_s": 1.6, "n_syllables": 7, "intonation_style": "moderate", "intonation_pattern": "falling",
            "calibration": {"pitch": "ravdess/male", "energy": "ravdess", "speed": "ravdess"},
            "words": [{"word": "Kids", "start": 0.8, "end": 1.1, "prominence": 1.4}],
        },
        "gender_source": "corpus",
        "age_source": "none",
    }
    for path, value in over.items():  # "prosody__rms_dbfs" -> rec["prosody"]["rms_dbfs"]
        *parents, key = path.split("__")
        node = rec
        for p in parents:
            node = node[p]
        if value is _DROP:
            node.pop(key)
        else:
            node[key] = value
    return rec


_DROP = object()


def good_batch(n: int = 9) -> list[dict[str, Any]]:
    return [annotated(i, *LEVELS[i % 3]) for i in range(n)]


def test_good_records_pass_including_a_whisper_without_pitch(cfg):
    batch = good_batch()
    # Whispered speech has no F0: pitch 'unknown' with no F0 measures is a valid annotation, not an error.
    batch.append(annotated(99, "unknown", "low", "slow", prosody__f0_median_hz=None, prosody__f0_median_st=None,
                           prosody__f0_range_st=None, prosody__voiced_fraction=0.0, annotations__intonation="too_short",
                           emotion="whisper"))
    report = validate_annotated(batch, cfg)
    assert report.quarantined == []
    assert report.valid == batch  # full records come back, not the flattened rows
    assert report.results["annotated"]["success"] is True


BAD_VALUES = [
    ("pitch 'very high'", {"annotations__pitch_level": "very high"}, "invalid_ann_pitch_level",
     "ann_pitch_level='very high'"),
    ("rms +5 dBFS", {"prosody__rms_dbfs": 5.0}, "p_rms_dbfs_too_high", "p_rms_dbfs=5.0"),
    ("energy level missing", {"annotations__energy_level": _DROP}, "missing_ann_energy_level",
     "ann_energy_level is missing"),
    ("speed named like pitch", {"annotations__speed_level": "high"}, "invalid_ann_speed_level",
     "ann_speed_level='high'"),
    ("lower-case gender", {"annotations__gender": "male"}, "invalid_ann_gender", "ann_gender='male'"),
    ("unknown intonation", {"annotations__intonation": "wobbly"}, "invalid_ann_intonation",
     "ann_intonation='wobbly'"),
    ("F0 above the tracker ceiling", {"prosody__f0_median_hz": 2000.0}, "p_f0_median_hz_too_high",
     "p_f0_median_hz=2000.0"),
    ("voiced fraction above 1", {"prosody__voiced_fraction": 1.5}, "p_voiced_fraction_too_high",
     "p_voiced_fraction=1.5"),
    ("too many stressed words", {"annotations__stressed_words": [f"w{i}" for i in range(11)]},
     "ann_n_stressed_too_high", "ann_n_stressed=11"),
]


def test_each_bad_value_quarantines_only_its_row_and_names_the_expectation(cfg):
    """One batch, one GX run: every bad row is caught by its own expectation; the good rows all pass."""
    batch = good_batch()
    bad = {f"bad-{i}": (case, annotated(50 + i, id=f"bad-{i}", **changes), expectation, detail)
           for i, (case, changes, expectation, detail) in enumerate(BAD_VALUES)}
    report = validate_annotated([*batch, *(rec for _, rec, _, _ in bad.values())], cfg)
    assert [r["id"] for r in report.valid] == [r["id"] for r in batch]
    assert sorted(q.id for q in report.quarantined) == sorted(bad)
    for q in report.quarantined:
        case, _, code, detail = bad[q.id]
        assert q.stage == "validate-annotated" and q.error_type == "ExpectationFailed", case
        assert q.reason.startswith(code + ":") and detail in q.reason, (case, q.reason)
        assert re.fullmatch(r"\w+: .+ \(expect_column_\w+\)", q.reason), (case, q.reason)  # code, detail, GX name
        assert ";" not in q.reason, (case, q.reason)  # one problem per row: nothing else was blamed


def test_several_problems_in_one_row_are_all_named(cfg):
    bad = annotated(77, "very high", prosody__rms_dbfs=5.0, annotations__energy_level=_DROP)
    report = validate_annotated([*good_batch(), bad], cfg)
    (q,) = report.quarantined
    for part in ("invalid_ann_pitch_level: ", "p_rms_dbfs_too_high: ", "missing_ann_energy_level: ",
                 "(expect_column_values_to_be_in_set)", "(expect_column_values_to_be_between)",
                 "(expect_column_values_to_not_be_null)"):
        assert part in q.reason
    assert report.failure_rate == pytest.approx(1 / 10)


def test_duplicate_ids_are_quarantined(cfg):
    batch = good_batch()
    report = validate_annotated([*batch, copy.deepcopy(batch[0])], cfg)
    assert {q.id for q in report.quarantined} == {batch[0]["id"]}
    assert all(q.reason.startswith("duplicate_id: ") and "(expect_column_values_to_be_unique)" in q.reason
               for q in report.quarantined)


def test_label_balance_is_reported_per_corpus_as_warnings():
    balanced = good_batch(9)
    skewed = [annotated(100 + i, "high", LEVELS[i % 3][1], LEVELS[i % 3][2], corpus="demo") for i in range(9)]
    dist = level_distributions(balanced + skewed)
    assert dist["ravdess"]["pitch_level"] == {"low": 3, "normal": 3, "high": 3}
    assert dist["demo"]["pitch_level"] == {"high": 9}
    warnings = balance_warnings(dist)
    assert sorted(warnings) == ["demo: pitch_level=low is 0% of 9 clips", "demo: pitch_level=normal is 0% of 9 clips"]


def test_failed_rows_move_from_the_output_to_the_quarantine_once(cfg, tmp_path):
    """finalize_validated: the output keeps the rows that passed, the failures join the quarantine with
    their reasons, a rerun does not repeat them, and too many failures return the error that stops the flow."""
    from emotionthinker.annotate import AnnotateReport, finalize_validated
    from emotionthinker.records import read_jsonl, write_jsonl
    from emotionthinker.validation import ValidationFailed

    rows = [annotated(i) for i in range(10)] + [annotated(10, pitch="loud")]
    out, quarantine = tmp_path / "annotated.jsonl", tmp_path / "annotated.quarantine.jsonl"
    write_jsonl(out, rows)
    write_jsonl(quarantine, [{"id": "earlier", "stage": "annotate", "reason": "silent"}])
    report = AnnotateReport(out, tmp_path / "m.jsonl", quarantine, tmp_path / "c.json", n_input=12, n_annotated=11,
                            n_quarantined=1, n_resumed=0, audio_seconds=1.0, wall_seconds=1.0, quarantine_by_reason={"silent": 1})
    for _ in range(2):  # the rerun validates the same rows again
        validation = validate_annotated(read_jsonl(out) if _ == 0 else rows, cfg)
        assert [q.id for q in validation.quarantined] == ["ravdess-clip-010"]
        assert finalize_validated(report, validation, cfg) is None  # 2 of 12 failed: within the test profile's bound
    assert [r["id"] for r in read_jsonl(out)] == [f"ravdess-clip-{i:03d}" for i in range(10)]
    moved = read_jsonl(quarantine)
    assert [q["id"] for q in moved] == ["earlier", "ravdess-clip-010"] and "pitch_level" in moved[1]["reason"]
    strict = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"max_failure_rate": 0.1})})
    err = finalize_validated(report, validate_annotated(rows, strict), strict)
    assert isinstance(err, ValidationFailed) and "silent" in str(err)
