"""annotate_manifest on bad input: refused manifests and clips kept in the quarantine with their reason."""

from __future__ import annotations

import pytest

from emotionthinker.annotate import annotate_manifest
from emotionthinker.records import read_jsonl
from tests.code.corpus_fixtures import write_wav


def test_duplicate_manifest_ids_are_refused_before_any_work(cfg, tmp_path):
    records = [{"id": "same", "audio_path": str(tmp_path / f"{i}.wav"), "corpus": "r"} for i in range(2)]
    with pytest.raises(ValueError, match="duplicate ids"):
        annotate_manifest(records, tmp_path / "out.jsonl", cfg, use_asr=False, workers=1, progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_clip_of_unknown_gender_without_a_gender_model_is_quarantined_with_the_reason(cfg, tmp_path):
    """Nothing registered in this test's MLflow store: the clip is kept in the quarantine, not given a guessed
    gender, and the counts still reconcile."""

    wav = write_wav(tmp_path / "a.wav", seconds=1.0, freq=180.0)
    records = [{"id": "g0", "audio_path": str(wav), "corpus": "r", "gender": "male"},
               {"id": "g1", "audio_path": str(wav), "corpus": "r", "gender": None}]
    out = tmp_path / "out" / "annotated.jsonl"
    report = annotate_manifest(records, out, cfg, use_asr=False, workers=1, progress=False)
    assert (report.n_input, report.n_annotated, report.n_quarantined) == (2, 1, 1)
    [q] = read_jsonl(report.quarantine)
    assert q["id"] == "g1" and q["reason"] == "gender_model_unavailable"
    assert [r["id"] for r in read_jsonl(out)] == ["g0"]


def test_a_clip_quarantined_by_validation_and_annotated_on_the_rerun_counts_once(cfg, tmp_path):
    """The flow moves rows that fail validation from the output to the quarantine; the rerun resumes,
    labels that clip again and validates it again, so the annotate report must count it as annotated
    only, or the flow's failure rate would count it twice."""
    from emotionthinker.annotate import finalize_validated
    from emotionthinker.records import write_jsonl
    from emotionthinker.annotation_report import validate_annotated

    records = [{"id": f"c{i}", "audio_path": str(write_wav(tmp_path / f"{i}.wav", seconds=1.0, freq=140.0 + 20 * i)),
                "corpus": "r", "gender": "male"} for i in range(3)]  # fmt: skip
    out = tmp_path / "out" / "annotated.jsonl"
    report = annotate_manifest(records, out, cfg, use_asr=False, workers=1, progress=False)
    assert (report.n_annotated, report.n_quarantined) == (3, 0)
    rows = read_jsonl(out)
    rows[1]["annotations"]["pitch_level"] = "loud"  # as if a labelling bug had written a value outside the suite's set
    write_jsonl(out, rows)
    cfg.validation.max_failure_rate = 0.2
    err = finalize_validated(report, validate_annotated(rows, cfg), cfg)
    assert err.reasons == {"invalid_ann_pitch_level": 1}  # counted by code, not by the full reason text
    cfg.validation.max_failure_rate = 0.5  # 1 of 3; the same failure again is not quarantined twice
    assert finalize_validated(report, validate_annotated(rows, cfg), cfg) is None
    assert [r["id"] for r in read_jsonl(out)] == ["c0", "c2"] and [q["id"] for q in read_jsonl(report.quarantine)] == ["c1"]

    again = annotate_manifest(records, out, cfg, use_asr=False, workers=1, progress=False)
    assert (again.n_input, again.n_annotated, again.n_quarantined, again.n_resumed) == (3, 3, 0, 3)
    assert [r["id"] for r in read_jsonl(out)] == ["c0", "c1", "c2"]


def test_a_manifest_whose_last_line_is_not_json_is_refused_not_shortened(cfg, tmp_path):
    """The last line used to be taken for a torn write and dropped: the run 'succeeded' one record short."""
    from emotionthinker.records import JsonlError

    wav = write_wav(tmp_path / "a.wav", seconds=1.0, freq=180.0)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(f'{{"id": "a", "audio_path": "{wav}", "corpus": "r", "gender": "male"}}\n{{"id": "b", "audio_pa\n')
    with pytest.raises(JsonlError, match=r"manifest\.jsonl:2: not valid JSON"):
        annotate_manifest(manifest, tmp_path / "out.jsonl", cfg, use_asr=False, workers=1, progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_stated_stops_are_not_retried_and_crashes_are():
    from prefect.states import Failed

    from emotionthinker.locks import OutputBusy
    from emotionthinker.prosody.levels import CalibrationError
    from emotionthinker.records import JsonlError
    from tasks.retry import unless_stated_stop

    assert not unless_stated_stop(None, None, Failed(data=JsonlError("m.jsonl:2: not valid JSON")))
    assert not unless_stated_stop(None, None, Failed(data=CalibrationError("calibration version 99, expected 1")))
    assert not unless_stated_stop(None, None, Failed(data=OutputBusy("another process is annotating into x")))
    assert unless_stated_stop(None, None, Failed(data=RuntimeError("A process in the process pool was terminated")))


def test_an_empty_manifest_or_a_record_without_id_is_refused(cfg, tmp_path):
    """An empty manifest used to 'succeed' with an empty dataset; a record without id failed with a KeyError."""
    from emotionthinker.errors import InputError

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n")
    with pytest.raises(InputError, match="holds no records"):
        annotate_manifest(manifest, tmp_path / "out.jsonl", cfg, use_asr=False, workers=1, progress=False)
    manifest.write_text('{"id": "a", "audio_path": "a.wav"}\n{"audio_path": "b.wav"}\n')
    with pytest.raises(InputError, match=r"1 records without an id \(first: record 2\)"):
        annotate_manifest(manifest, tmp_path / "out.jsonl", cfg, use_asr=False, workers=1, progress=False)
    assert not (tmp_path / "out.jsonl").exists()
