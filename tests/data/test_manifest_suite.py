"""The manifest's Great Expectations suite and the readable-audio check: every failure lands on its record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotionthinker.labels import LABELS
from emotionthinker.records import ManifestRecord, QuarantineRecord
from emotionthinker.validation import (
    ValidationFailed, check_audio, results_payload, validate_manifest, validate_table,
)
from tests.conftest import RAVDESS_DIR, requires_ravdess

SR = 16000


def voiced(seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def records(n: int = 6) -> list[dict]:
    return [
        ManifestRecord(
            id=f"c-{i}", audio_path=f"/audio/{i}.wav", corpus="c", split=("train", "validation", "test")[i % 3],
            speaker=f"s{i % 2}", gender=("male", "female", "unknown")[i % 3], emotion=LABELS[i % len(LABELS)],
            source_label="x", duration_s=1.0 + i,
        ).model_dump(mode="json")
        for i in range(n)
    ]  # fmt: skip


def test_clean_records_pass(cfg):
    report = validate_table(records(), "manifest", cfg)
    assert len(report.valid) == 6 and report.quarantined == [] and report.failure_rate == 0
    assert report.results["manifest"]["success"] is True


@pytest.mark.parametrize(
    ("field", "value", "code", "expectation", "detail"),
    [
        ("emotion", "boredom", "invalid_emotion", "expect_column_values_to_be_in_set", "emotion='boredom' not in"),
        ("split", "dev", "invalid_split", "expect_column_values_to_be_in_set", "split='dev' not in"),
        ("gender", "m", "invalid_gender", "expect_column_values_to_be_in_set", "gender='m' not in"),
        # The duration rule uses the audio check's codes: a short clip is `too_short` whichever check caught it.
        ("duration_s", 0.1, "too_short", "expect_column_values_to_be_between", "duration_s=0.1 outside [0.3, 60.0]"),
        ("duration_s", 600.0, "too_long", "expect_column_values_to_be_between", "duration_s=600.0 outside"),
        ("audio_path", None, "missing_audio_path", "expect_column_values_to_not_be_null", "audio_path is missing"),
        ("emotion", None, "missing_emotion", "expect_column_values_to_not_be_null", "emotion is missing"),
    ],
)
def test_a_bad_value_quarantines_exactly_its_record(cfg, field, value, code, expectation, detail):
    rows = records()
    rows[3][field] = value
    report = validate_table(rows, "manifest", cfg)
    assert [r["id"] for r in report.valid] == ["c-0", "c-1", "c-2", "c-4", "c-5"]
    (q,) = report.quarantined
    assert isinstance(q, QuarantineRecord) and q.id == "c-3" and q.stage == "validate"
    assert q.reason.startswith(f"{code}: ") and detail in q.reason and q.reason.endswith(f"({expectation})")
    assert report.reasons() == {code: 1}


def test_duplicate_ids_and_null_ids_are_caught(cfg):
    rows = records()
    rows[4]["id"] = rows[1]["id"]
    rows[5]["id"] = None
    report = validate_table(rows, "manifest", cfg)
    reasons = {(q.id, q.audio_path): q.reason for q in report.quarantined}
    assert "is duplicated" in reasons[("c-1", "/audio/1.wav")] and "is duplicated" in reasons[("c-1", "/audio/4.wav")]
    assert reasons[("row-5", "/audio/5.wav")] == "missing_id: id is missing (expect_column_values_to_not_be_null)"
    assert reasons[("c-1", "/audio/1.wav")].startswith("duplicate_id: ")
    assert len(report.valid) == 3


def test_a_missing_column_fails_the_whole_table(cfg):
    rows = [{k: v for k, v in r.items() if k != "split"} for r in records()]
    report = validate_table(rows, "manifest", cfg)
    assert report.valid == [] and report.failure_rate == 1.0
    assert all("missing_column: column 'split' is missing (expect_column_to_exist)" in q.reason
               for q in report.quarantined)
    with pytest.raises(ValidationFailed, match=r"100\.0% of records failed validation, above"):
        report.raise_if_over(cfg.validation.max_failure_rate)


def test_failure_rate_bound_is_inclusive(cfg):
    rows = records(5)
    rows[0]["emotion"] = "boredom"
    report = validate_table(rows, "manifest", cfg)
    assert report.failure_rate == pytest.approx(0.2)
    report.raise_if_over(0.2)  # at the bound: goes on
    with pytest.raises(ValidationFailed) as err:
        report.raise_if_over(0.19)
    assert err.value.reasons == {"invalid_emotion": 1} and "most common: invalid_emotion x1" in str(err.value)


def test_audio_check_decodes_every_clip(cfg, tmp_path: Path):
    def rec(name: str, duration: float | None = 1.0) -> ManifestRecord:
        return ManifestRecord(id=name, audio_path=str(tmp_path / f"{name}.wav"), corpus="c", split="train",
                              speaker="s", emotion="sad", source_label="sad", duration_s=duration)  # fmt: skip

    sf.write(tmp_path / "good.wav", voiced(), SR)
    sf.write(tmp_path / "stereo8k.wav", np.stack([voiced(1.0, 8000)] * 2, axis=1), 8000)
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    nan = voiced()
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    report = check_audio([rec("good"), rec("stereo8k", None), rec("silent"), rec("nan"), rec("gone")], cfg)
    assert [r.id for r in report.valid] == ["good", "stereo8k"]
    assert report.valid[1].duration_s == pytest.approx(1.0, abs=0.01)  # measured when the adapter gave none
    assert {q.id: q.reason for q in report.quarantined} == {
        "silent": "silent", "nan": "non_finite_samples", "gone": "unreadable_path"
    }
    assert all(q.detail for q in report.quarantined)


def test_prior_quarantine_counts_towards_the_failure_rate(cfg, tmp_path: Path):
    sf.write(tmp_path / "a.wav", voiced(), SR)
    good = ManifestRecord(id="a", audio_path=str(tmp_path / "a.wav"), corpus="c", split="train", speaker="s",
                          emotion="happy", source_label="happy", duration_s=1.0)  # fmt: skip
    prior = QuarantineRecord(id="b", audio_path="/x/b.wav", stage="manifest", reason="corrupt",
                             error_type="AudioDecodeError")  # fmt: skip
    report = validate_manifest([good], cfg, prior_quarantine=[prior])
    assert report.checked == 2 and report.failure_rate == 0.5 and [r.id for r in report.valid] == ["a"]
    payload = results_payload(report)
    assert payload["reasons"] == {"corrupt": 1} and payload["suites"]["manifest"]["success"] is True


@requires_ravdess
@pytest.mark.shared_data
def test_real_ravdess_manifest_passes_the_suite(cfg):
    from emotionthinker.corpora import build_manifest

    result = build_manifest("ravdess", RAVDESS_DIR, cfg)
    report = validate_manifest(result.records, cfg, prior_quarantine=result.quarantined)
    assert len(report.valid) == 120 and report.quarantined == []
    assert {r.emotion for r in report.valid} <= set(LABELS)
