"""write_cot with the offline composer: provenance, splits, errors file, resume; and the CLI commands."""

from __future__ import annotations

import json
import os
from collections import defaultdict

from emotionthinker.cot import errors_path_for, write_cot
from emotionthinker.cot.prompt import PROMPT_VERSION
from emotionthinker.cot.records import EmotionCotRecord, parse_target
from emotionthinker.errors import InputError
from emotionthinker.records import read_jsonl, write_jsonl

ANN = {"pitch_level": "low", "energy_level": "low", "speed_level": "slow", "stressed_words": [],
       "intonation": "falling", "gender": "Male", "age_level": "Middle-aged"}


def records(n: int = 24) -> list[dict]:
    return [{"id": f"r{i:02d}", "audio_path": f"/c/{i}.wav", "corpus": "c", "split": "test" if i % 8 == 7 else "train",
             "speaker": f"spk{i % 8}", "gender": "male", "emotion": "sad", "source_label": "sad",
             "transcription": "Dogs are sitting by the door.", "duration_s": 2.5, "annotations": dict(ANN)}
            for i in range(n)]


def test_offline_writer_writes_every_record_with_provenance_and_speaker_splits(cfg, tmp_path):
    out = tmp_path / "cot.jsonl"
    cfg.cot.validation_fraction = 0.3
    rep = write_cot(records(), out, cfg)
    got = read_jsonl(out)
    assert rep.n_written == 24 == len(got) and rep.n_errors == 0 and rep.writer == "offline-composer"
    by_speaker = defaultdict(set)
    for rec in got:
        EmotionCotRecord.model_validate(rec)
        assert parse_target(rec["target"]) == (rec["reasoning"], "sad")
        prov = rec["provenance"]
        assert prov["writer"] == "offline-composer" and prov["prompt_version"] == PROMPT_VERSION
        assert prov["model"].startswith("offline-composer") and prov["base_url_host"] is None and prov["templates"]
        by_speaker[rec["speaker"]].add(rec["split"])
    assert all(len(s) == 1 for s in by_speaker.values())  # no speaker in two splits
    assert by_speaker["spk7"] == {"test"}
    assert {s for v in by_speaker.values() for s in v} == {"train", "validation", "test"}
    assert rep.metrics()["cot_written"] == 24


def test_invalid_and_duplicate_records_and_resume(cfg, tmp_path):
    out = tmp_path / "cot.jsonl"
    recs = records(10)
    recs[3]["annotations"] = {**ANN, "speed_level": "glacial"}
    recs.append(dict(recs[0]))
    rep = write_cot(recs, out, cfg)
    errors = read_jsonl(errors_path_for(out))
    assert rep.n_written == 9 and rep.n_invalid == 1 and rep.n_duplicates == 1
    assert [e["id"] for e in errors] == ["r03"] and "speed_level" in errors[0]["reason"]

    # a torn last line (writer killed mid-record) is repaired and that record written again, once
    data = out.read_text()
    out.write_text(data[: data.rstrip("\n").rfind("\n") + 1] + data.rstrip("\n").split("\n")[-1][:30])
    rep2 = write_cot(recs, out, cfg)
    ids = [r["id"] for r in read_jsonl(out)]
    assert rep2.n_written == 1 and rep2.n_resumed == 8 and len(ids) == len(set(ids)) == 9
    assert [e["id"] for e in read_jsonl(errors_path_for(out))] == ["r03"]  # still once

    # fixed input: the errored record is retried and leaves the errors file
    recs[3]["annotations"] = dict(ANN)
    rep3 = write_cot(recs, out, cfg)
    assert rep3.n_written == 1 and read_jsonl(errors_path_for(out)) == []
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted({r["id"] for r in recs})


def test_rerun_is_idempotent(cfg, tmp_path):
    out = tmp_path / "cot.jsonl"
    write_cot(records(6), out, cfg)
    before = out.read_bytes()
    rep = write_cot(records(6), out, cfg)
    assert rep.n_written == 0 and rep.n_resumed == 6 and out.read_bytes() == before


def test_cli_cot_and_rm_data(cfg, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emotionthinker.cli import app

    ann_path, out, tuples = tmp_path / "ann.jsonl", tmp_path / "cot.jsonl", tmp_path / "rm.jsonl"
    write_jsonl(ann_path, records(5))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(json.dumps({"profile": "test", "paths": {"workspace": str(cfg.workspace),
                                                                  "data": str(cfg.data_dir)},
                                    "rm_data": {"variants_per_record": 2}}))
    monkeypatch.delenv("ET_PROFILE", raising=False)
    # the CLI exports service settings into os.environ; give them back after the test
    for key in ("PREFECT_HOME", "MLFLOW_TRACKING_URI", "PREFECT_SERVER_ANALYTICS_ENABLED", "DVC_NO_ANALYTICS",
                "GX_ANALYTICS_ENABLED", "DO_NOT_TRACK", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                "PREFECT_LOGGING_LEVEL", "PREFECT_LOGGING_EXTRA_LOGGERS", "PREFECT_SERVER_API_HOST", "PREFECT_API_URL"):
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:  # set then delete: monkeypatch then remembers the key was absent and removes it afterwards
            monkeypatch.setenv(key, "")
            monkeypatch.delenv(key)
    runner = CliRunner()
    res = runner.invoke(app, ["cot", "--in", str(ann_path), "--out", str(out), "-p", "test", "-c", str(cfg_file)])
    assert res.exit_code == 0, res.output
    assert "5 written" in res.output and len(read_jsonl(out)) == 5
    res = runner.invoke(app, ["rm-data", "--in", str(out), "--out", str(tuples), "-p", "test", "-c", str(cfg_file)])
    assert res.exit_code == 0, res.output
    assert "15 tuples (5 gold, 10 degraded" in res.output and len(read_jsonl(tuples)) == 15
    res = runner.invoke(app, ["cot", "--in", str(tmp_path / "missing.jsonl"), "--out", str(out), "-p", "test"])
    assert res.exit_code == 2
    (tmp_path / "empty.jsonl").write_text("\n")  # refused, not "0 written" (the console script exits 2 on it)
    res = runner.invoke(app, ["cot", "--in", str(tmp_path / "empty.jsonl"), "--out", str(out), "-p", "test"])
    assert isinstance(res.exception, InputError) and "holds no records" in str(res.exception)
