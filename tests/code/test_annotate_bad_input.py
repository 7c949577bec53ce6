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
