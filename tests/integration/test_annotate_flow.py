"""The annotate flow end to end under Prefect's test harness: demo-corpus clips in, annotated records,
quarantine, DVC version and MLflow run out; and a run killed mid-way (SIGKILL to the CLI's process
group) that a rerun finishes with exactly one record per input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotionthinker.annotate import annotated_paths
from emotionthinker.records import read_jsonl, write_jsonl
from emotionthinker.versioning import remote_has

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

ANNOTATION_KEYS = {"pitch_level", "energy_level", "speed_level", "stressed_words", "intonation", "gender", "age_level"}
PROSODY_KEYS = {
    "f0_median_hz", "f0_median_st", "f0_range_st", "rms_dbfs", "voiced_fraction", "speech_rate_sps",
    "articulation_rate_sps", "duration_s", "speech_duration_s", "intonation_style", "intonation_pattern", "calibration",
}


@pytest.fixture(scope="module")
def demo_records(tmp_path_factory) -> list[dict]:
    """Manifest records of the test profile's demo corpus (18 espeak-ng clips, 9 classes, 6 voices)."""
    from emotionthinker.config import load_config
    from emotionthinker.corpora import build_manifest
    from emotionthinker.democorpus import synthesize_demo_corpus

    root = tmp_path_factory.mktemp("demo-corpus")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    cfg = load_config("test", environ=env, overrides={"paths": {"workspace": str(root / "ws"), "data": str(root / "ws" / "data")},
                                                      "demo": {"glides_per_pattern": 0}})
    synthesize_demo_corpus(root / "corpus", cfg)
    return [r.model_dump(mode="json") for r in build_manifest("demo", root / "corpus", cfg).records]


def _pick(records: list[dict], n: int) -> list[dict]:
    """n voiced clips alternating gender (whispers have no pitch; keep them for the oracle tests)."""
    voiced = [r for r in records if r["emotion"] != "whisper"]
    by_gender = {g: [r for r in voiced if r["gender"] == g] for g in ("male", "female")}
    out = [r for pair in zip(by_gender["male"], by_gender["female"]) for r in pair]
    return out[:n]


def _write_manifest(cfg, records: list[dict]) -> Path:
    """Where `ingest` puts a manifest: <data>/manifests/demo/manifest.jsonl (annotated -> <data>/annotated/demo)."""
    path = cfg.data_dir / "manifests" / "demo" / "manifest.jsonl"
    write_jsonl(path, records)
    return path


def _bad_records(cfg, template: dict) -> list[dict]:
    silent = cfg.workspace / "incoming" / "silent.wav"
    silent.parent.mkdir(parents=True, exist_ok=True)
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    return [
        {**template, "id": "demo-silent-0001", "audio_path": str(silent)},
        {**template, "id": "demo-missing-0002", "audio_path": str(cfg.workspace / "incoming" / "gone.wav")},
    ]


def test_flow_without_asr_annotates_quarantines_versions_and_logs(cfg, config_file, demo_records):
    from mlflow import MlflowClient

    from flows.annotate import annotate_flow

    good = _pick(demo_records, 6)
    manifest = _write_manifest(cfg, good + _bad_records(cfg, good[0]))
    cfg.validation.max_failure_rate = 0.5  # two of eight clips are broken on purpose
    res = annotate_flow(str(manifest), profile="test", config_file=config_file(cfg), use_asr=False, workers=2)

    # Counts reconcile: every input is annotated or quarantined, once.
    c = res["counts"]
    assert (c["input"], c["annotated"], c["quarantined"], c["resumed"]) == (8, 6, 2, 0)
    out = Path(res["annotated"])
    assert out == cfg.data_dir / "annotated" / "demo" / "annotated.jsonl"
    annotated = read_jsonl(out)
    quarantine = read_jsonl(res["quarantine"])
    assert [r["id"] for r in annotated] == [r["id"] for r in good]  # manifest order
    assert {q["id"]: q["reason"] for q in quarantine} == {"demo-silent-0001": "silent", "demo-missing-0002": "unreadable_path"}
    assert all(q["stage"] == "annotate" and q["error_type"] for q in quarantine)

    for rec in annotated:
        assert set(rec["annotations"]) == ANNOTATION_KEYS and PROSODY_KEYS <= set(rec["prosody"])
        assert rec["transcription_source"] == "corpus" and rec["annotations"]["stressed_words"] == []  # no ASR, no timings
        assert rec["annotations"]["gender"] == rec["gender"].capitalize() and rec["gender_source"] == "corpus"
        assert (rec["annotations"]["age_level"], rec["age_source"]) == ("unknown", "none")  # no age model: never a guess
        # 3 clips per gender are below the test profile's min_group_size (5): the record says it fell back,
        # to its own gender over all corpora (pooling genders would rank pitch by gender).
        assert rec["prosody"]["calibration"] == {"pitch": f"global/{rec['gender']}", "energy": "demo", "speed": "demo"}
    calibration = json.loads(Path(res["calibration"]).read_text())
    assert set(calibration["groups"]["pitch"]) == {"global", "global/male", "global/female"}
    assert calibration["groups"]["pitch"]["global/female"]["n"] == 3 and calibration["groups"]["energy"]["demo"]["n"] == 6

    # DVC: the annotated folder is tracked and pushed; the md5 is returned and tagged on the run.
    ((rel, md5),) = res["data_version"].items()
    assert rel == "data/annotated/demo" and md5.endswith(".dir") and remote_has(md5, cfg)

    # MLflow: counts, speed, label distributions, thresholds, GX results and the contour plot.
    client = MlflowClient(cfg.tracking_uri)
    run = client.get_run(res["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "annotate"
    assert run.data.tags[f"data_version.{rel}"] == md5
    m = run.data.metrics
    assert (m["records_in"], m["records_annotated"], m["quarantined_annotate"], m["quarantined_validate"]) == (8, 6, 2, 0)
    assert m["audio_seconds"] > 0 and m["x_realtime"] > 0
    assert run.data.params["use_asr"] == "false"
    assert run.data.params["asr.stress_pitch_baseline"] == "declination" and "traits.gender_model" in run.data.params

    def artifact(path: str) -> Path:
        return Path(client.download_artifacts(run.info.run_id, path, str(cfg.workspace / "dl")))

    dist = json.loads(artifact("annotate/label_distributions.json").read_text())
    for key in ("pitch_level", "energy_level", "speed_level", "intonation"):
        assert dist["demo"][key] == dict(Counter(r["annotations"][key] for r in annotated)), key
    assert json.loads(artifact("annotate/calibration.json").read_text()) == calibration
    png = artifact("annotate/f0_contours.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = json.loads(artifact("annotate/quarantine.json").read_text())
    assert sorted(row[table["columns"].index("id")] for row in table["data"]) == ["demo-missing-0002", "demo-silent-0001"]
    gx = json.loads(artifact("validation/gx_results.json").read_text())
    assert gx["checked"] == 6 and gx["quarantined"] == 0 and gx["suites"]["annotated"]["success"] is True

    # A rerun resumes everything and reproduces the same data version.
    again = annotate_flow(str(manifest), profile="test", config_file=config_file(cfg), use_asr=False, workers=2)
    assert again["counts"] == {**c, "resumed": 8}
    assert again["data_version"] == res["data_version"] and read_jsonl(out) == annotated


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(cfg, config_file, demo_records):
    """A hand-started annotate beside the nightly one would append to the same measures stream and rewrite
    the same files; it is refused at once, naming the holder, and runs normally once the first is done."""
    from emotionthinker.annotate import output_lock
    from emotionthinker.locks import OutputBusy
    from flows.annotate import annotate_flow

    manifest = _write_manifest(cfg, _pick(demo_records, 3))
    out = cfg.data_dir / "annotated" / "demo" / "annotated.jsonl"
    config = config_file(cfg)
    with output_lock(out, cfg):  # as the first run holds it
        with pytest.raises(OutputBusy, match=rf"another process is annotating into .*annotated\.jsonl: pid {os.getpid()} "):
            annotate_flow(str(manifest), profile="test", config_file=config, use_asr=False, workers=1)
        assert not out.parent.exists()  # nothing measured, nothing written
    res = annotate_flow(str(manifest), profile="test", config_file=config, use_asr=False, workers=1)
    assert res["counts"]["annotated"] == 3
    with output_lock(cfg.data_dir / "annotated" / "other" / "annotated.jsonl", cfg), output_lock(out, cfg):
        pass  # another output has its own lock


def test_failure_rate_above_bound_stops_the_flow_before_versioning(cfg, config_file, demo_records):
    from mlflow import MlflowClient

    from emotionthinker.validation import ValidationFailed
    from flows.annotate import annotate_flow

    good = _pick(demo_records, 1)
    manifest = _write_manifest(cfg, good + _bad_records(cfg, good[0]))
    with pytest.raises(ValidationFailed, match=r"66\.7% of records failed"):
        annotate_flow(str(manifest), profile="test", config_file=config_file(cfg), use_asr=False, workers=1)
    assert not (cfg.data_dir / "annotated" / "demo.dvc").exists()  # nothing versioned
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs(client.get_experiment_by_name(cfg.services.mlflow_experiment).experiment_id)
    assert run.info.status == "FAILED" and "ValidationFailed" in run.data.tags["error"]
    assert run.data.metrics["quarantined_annotate"] == 2 and run.data.metrics["records_annotated"] == 1
    quarantine = json.loads(Path(client.download_artifacts(run.info.run_id, "annotate/quarantine.json",
                                                           str(cfg.workspace / "dl"))).read_text())
    assert len(quarantine["data"]) == 2


def test_flow_with_asr_aligns_corpus_text_and_transcribes_clips_without_text(cfg, config_file, demo_records):
    from emotionthinker.prosody.asr import text_words
    from flows.annotate import annotate_flow

    with_text, without_text = _pick(demo_records, 2)
    manifest = _write_manifest(cfg, [with_text, {**without_text, "transcription": None}])
    res = annotate_flow(str(manifest), profile="test", config_file=config_file(cfg), use_asr=True, workers=1)
    assert res["counts"] == {"input": 2, "annotated": 2, "quarantined": 0, "resumed": 0}
    aligned, heard = read_jsonl(res["annotated"])

    assert aligned["transcription_source"] == "corpus" and aligned["transcription"] == with_text["transcription"]
    assert [w["word"] for w in aligned["prosody"]["words"]] == text_words(with_text["transcription"])
    assert heard["transcription_source"] == "asr"
    # Whisper tiny.en on espeak-ng speech: most words of the sentence are heard.
    truth = {w.lower() for w in text_words(without_text["transcription"])}
    got = {w.lower() for w in text_words(heard["transcription"])}
    assert len(truth & got) >= 0.6 * len(truth), (without_text["transcription"], heard["transcription"])
    for rec in (aligned, heard):
        words = rec["prosody"]["words"]
        starts = [w["start"] for w in words]
        assert starts == sorted(starts) and all(w["end"] > w["start"] for w in words)
        assert 0 <= words[0]["start"] and words[-1]["end"] <= rec["prosody"]["duration_s"] + 0.05
        assert rec["stress_source"] == "acoustic"
        assert len(rec["annotations"]["stressed_words"]) <= 2  # asr.stress_max_words


def _complete_lines(path: Path) -> list[bytes]:
    """Lines that end in a newline; a line being written (or torn by a kill) is not one yet."""
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def _line_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in _complete_lines(path)]


def test_killed_cli_run_resumes_with_exactly_one_record_per_input(cfg, config_file, demo_records):
    """SIGKILL the `emotionthinker annotate` process group mid-run, tear the last streamed line, rerun."""
    from prefect.settings import PREFECT_API_URL

    from flows.annotate import annotate_flow

    # No corpus text: Whisper transcribes every clip (~0.5 s of CPU each), so the run is
    # still going when the first records reach the measures file.
    records = [{**r, "transcription": None} for r in demo_records[:12]]
    manifest = _write_manifest(cfg, records)
    out = cfg.data_dir / "annotated" / "demo" / "annotated.jsonl"
    measures, quarantine, _ = annotated_paths(out)
    config = config_file(cfg)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}  # the harness's server: no start-up
    exe = Path(sys.executable).parent / "emotionthinker"  # the installed console script
    assert exe.is_file(), f"{exe} not found: is the project installed in this environment?"
    cli = [str(exe), "annotate", "--manifest", str(manifest), "--out", str(out), "--workers", "2", "--asr",
           "--profile", "test", "--config", config]
    # Its own session, so that one killpg reaches the CLI and every pool worker it spawned.
    proc = subprocess.Popen(cli, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_complete_lines(measures)) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read().decode()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its spawned pool workers, everything in the group
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists()  # pass 2 never ran
    before = _line_ids(measures)
    assert 3 <= len(before) < len(records) and len(set(before)) == len(before)

    # A writer killed inside a line leaves a torn tail: the rerun must drop it and redo that clip.
    lines = _complete_lines(measures)
    torn_id = json.loads(lines[-1])["id"]
    measures.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    resumed_ids = set(before) - {torn_id}
    print(f"\nkilled with {len(before)} of {len(records)} clips measured; torn: {torn_id}")

    res = annotate_flow(str(manifest), profile="test", config_file=config_file(cfg), use_asr=True, workers=2)
    c = res["counts"]
    assert c["input"] == len(records) and c["annotated"] + c["quarantined"] == len(records)
    assert c["resumed"] == len(resumed_ids) > 0
    final = read_jsonl(out)
    quarantined = read_jsonl(quarantine)
    assert Counter([r["id"] for r in final] + [q["id"] for q in quarantined]) == Counter(r["id"] for r in records)
    after = _line_ids(measures)  # every line parses: the torn tail is gone
    assert len(after) == len(set(after)) and set(after) >= set(before)
    assert measures.read_bytes().endswith(b"\n")
    assert all(r["transcription_source"] == "asr" for r in final)


def test_cli_refuses_a_bad_manifest_line_at_once_with_one_line_and_exit_2(cfg, config_file, demo_records):
    """The installed command on a manifest whose last line is cut off: the record used to vanish and the run
    'succeed'; now the command names file and line (exit 2), and the task does not retry bad input."""
    from prefect.settings import PREFECT_API_URL

    manifest = _write_manifest(cfg, demo_records[:2])
    manifest.write_text(manifest.read_text() + manifest.read_text().splitlines()[0][:40] + "\n")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    exe = Path(sys.executable).parent / "emotionthinker"
    proc = subprocess.run([str(exe), "annotate", "--manifest", str(manifest), "--no-asr", "--profile", "test",
                           "--config", config_file(cfg)], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bad input: ") and f"{manifest.name}:3: not valid JSON" in last, last
    assert "Retry" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr  # the flow and task logs state it in one line each
    assert not (cfg.data_dir / "annotated").exists() or not any((cfg.data_dir / "annotated").rglob("annotated.jsonl"))
