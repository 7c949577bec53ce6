"""A rerun of annotate reuses streamed measures only when they were made under the same settings.

Before: resume went by clip id alone, so after a config change (an F0 ceiling, a duration limit, a gender
model registered since) the rerun, and the retrain stage whose cache key had moved, kept every stale measure
and quarantine, and the new settings never reached the data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from emotionthinker.annotate import annotate_manifest, annotated_paths, measure_settings, settings_path
from emotionthinker.records import read_jsonl

SR = 16000


def _clip(path, f0: float, seconds: float = 1.2):
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), SR)
    return str(path)


def _records(tmp_path):
    voices = [(110, "male", 1.2), (125, "male", 1.2), (210, "female", 1.2), (240, "female", 2.5)]
    return [{"id": f"c{i}", "audio_path": _clip(tmp_path / "clips" / f"c{i}.wav", f0, s), "corpus": "r",
             "gender": g, "transcription": "kids are talking"} for i, (f0, g, s) in enumerate(voices)]  # fmt: skip


def _run(records, out, cfg):
    return annotate_manifest(records, out, cfg, use_asr=False, workers=1, progress=False)


def test_same_settings_resume_other_settings_measure_again(cfg, tmp_path, caplog):
    records, out = _records(tmp_path), tmp_path / "annotated" / "annotated.jsonl"
    measures, quarantine, _ = annotated_paths(out)
    first = _run(records, out, cfg)
    assert (first.n_resumed, first.n_annotated) == (0, 4)
    assert json.loads(settings_path(out).read_text()) == measure_settings(cfg, False, records)
    annotated = out.read_bytes()
    # Two clips per gender are under the test profile's min_batch_group_size (3): the reference labels them.
    assert read_jsonl(out)[0]["prosody"]["calibration"]["pitch"] == "reference/male"

    # Same settings, or settings that only change speed or the levels (pass 2): every measure is reused.
    cfg.prosody.workers, cfg.asr.cpu_threads = 3, 4
    again = _run(records, out, cfg)
    assert again.n_resumed == 4 and out.read_bytes() == annotated
    assert first.speed_text.endswith("x real time") and again.speed_text == "no clip measured"  # not "0x"
    cfg.prosody.min_group_size = 2  # per-corpus x gender groups now: other levels, from the same measures
    relabelled = _run(records, out, cfg)
    assert relabelled.n_resumed == 4 and read_jsonl(out)[0]["prosody"]["calibration"]["pitch"] == "r/male"
    cfg.prosody.min_group_size = 50
    cfg.prosody.min_batch_group_size = 1
    own = _run(records, out, cfg)
    assert own.n_resumed == 4 and read_jsonl(out)[0]["prosody"]["calibration"]["pitch"] == "global/male"
    cfg.prosody.min_batch_group_size = 3

    # A killed run under the same settings: only the missing clips are measured.
    lines = measures.read_bytes().splitlines(keepends=True)
    measures.write_bytes(b"".join(lines[:2]))
    assert _run(records, out, cfg).n_resumed == 2 and out.read_bytes() == annotated

    # A measuring setting changed: nothing stale is kept, and the log says why.
    cfg.audio.max_duration_s = 2.0  # c3 (2.5 s) is now too long
    with caplog.at_level(logging.WARNING, logger="emotionthinker.annotate"):
        changed = _run(records, out, cfg)
    assert changed.n_resumed == 0 and "other settings (audio)" in caplog.text
    assert [r["id"] for r in read_jsonl(out)] == ["c0", "c1", "c2"]
    assert [(q["id"], q["reason"]) for q in read_jsonl(quarantine)] == [("c3", "too_long")]

    # And back: the clip quarantined under the old limit is measured again, not left in the quarantine.
    cfg.audio.max_duration_s = 60.0
    back = _run(records, out, cfg)
    assert (back.n_resumed, back.n_annotated, back.n_quarantined) == (0, 4, 0)
    assert out.read_bytes() == annotated and quarantine.read_bytes() == b""


def test_measures_without_recorded_settings_are_not_trusted(cfg, tmp_path, caplog):
    """A folder made before settings were recorded, or whose settings file was lost: measure again."""
    records, out = _records(tmp_path), tmp_path / "annotated" / "annotated.jsonl"
    _run(records, out, cfg)
    annotated = out.read_bytes()
    settings_path(out).unlink()
    with caplog.at_level(logging.WARNING, logger="emotionthinker.annotate"):
        report = _run(records, out, cfg)
    assert report.n_resumed == 0 and "no settings recorded" in caplog.text
    assert out.read_bytes() == annotated  # same settings in fact: same bytes


def test_the_measuring_code_and_a_needed_gender_model_are_settings(cfg, tmp_path, monkeypatch):
    from emotionthinker import annotate

    records = _records(tmp_path)
    base = measure_settings(cfg, False, records)
    assert "gender_model" not in base  # every clip has its corpus gender: the classifier is never asked
    assert measure_settings(cfg, True, records) != base
    unknown = [{**records[0], "gender": None}, *records[1:]]
    assert measure_settings(cfg, False, unknown)["gender_model"] == "none"  # nothing registered yet
    monkeypatch.setattr(annotate, "measure_code_digest", lambda: "edited")
    assert measure_settings(cfg, False, records) == {**base, "code": "edited"}


def test_the_measuring_code_is_the_per_clip_code_not_the_orchestration():
    """An edit to annotate.py (resume, pool, locks) used to change the digest and so re-measure every clip
    of every annotated set on the next run; the levels (pass 2) are recomputed anyway."""
    from emotionthinker.annotate import measure_code_files

    package = Path(__file__).resolve().parents[2] / "emotionthinker"
    files = {f.relative_to(package).as_posix() for f in measure_code_files()}
    assert {"clip_annotation.py", "audio.py", "prosody/f0.py", "prosody/measures.py", "prosody/asr.py",
            "prosody/stress.py", "traits/gender.py"} <= files  # fmt: skip
    assert "annotate.py" not in files and "prosody/levels.py" not in files and "records.py" not in files
