"""The ingest flow end to end under Prefect's test harness, with its MLflow and DVC side effects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotionthinker.records import read_jsonl
from emotionthinker.versioning import dvc_location, remote_has

pytestmark = pytest.mark.usefixtures("prefect_harness")

SR = 16000
ACCEPTED = "accepted"


def speechlike(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated tone: not silent, finite, clearly audio."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (140 + 20 * np.sin(2 * np.pi * 0.5 * t)) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    x = (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    return np.stack([x, 0.8 * x], axis=1) if channels == 2 else x


def make_broken_folder(root: Path) -> dict[str, str]:
    """<label>/<file> folder of good and deliberately broken files -> expected outcome per relative path."""

    def put(rel: str, data: np.ndarray, sr: int = SR, **kw) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sr, **kw)
        return path

    expected = {
        "happy/good.wav": ACCEPTED,
        "sad/good.flac": ACCEPTED,
        "angry/stereo_8k.wav": ACCEPTED,  # 8 kHz stereo: downmixed and resampled
        "fear/clip.mp3": ACCEPTED,
        "surprised/truncated.wav": "corrupt",  # cut inside the header
        "neutral/empty.wav": "empty",  # zero bytes
        "neutral/silent.wav": "silent",
        "angry/nan.wav": "non_finite_samples",
        "sad/ten_minutes.wav": "too_long",
        "happy/blip.wav": "too_short",  # 0.1 s: caught by the GX duration rule, under the audio check's code
        "happy/notes.txt": "unsupported_format",
        "boredom/bored.wav": "excluded",  # no counterpart in the nine classes
        ".DS_Store": "skipped",
    }
    put("happy/good.wav", speechlike(1.2))
    put("sad/good.flac", speechlike(1.0, seed=1), format="FLAC")
    put("angry/stereo_8k.wav", speechlike(1.5, sr=8000, channels=2, seed=2), sr=8000)
    put("fear/clip.mp3", speechlike(1.3, seed=3), format="MP3")
    truncated = put("surprised/truncated.wav", speechlike(1.0, seed=4))
    truncated.write_bytes(truncated.read_bytes()[:40])
    (root / "neutral").mkdir(parents=True, exist_ok=True)
    (root / "neutral/empty.wav").write_bytes(b"")
    put("neutral/silent.wav", np.zeros(SR, dtype=np.float32))
    nan = speechlike(1.0, seed=5)
    nan[1000:1010] = np.nan
    put("angry/nan.wav", nan, subtype="FLOAT")
    put("sad/ten_minutes.wav", speechlike(600.0, sr=8000, seed=6), sr=8000)
    put("happy/blip.wav", speechlike(0.1, seed=7))
    (root / "happy/notes.txt").write_text("not audio")
    put("boredom/bored.wav", speechlike(1.0, seed=8))
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    return expected


def test_broken_files_are_accounted_for_with_mlflow_and_dvc_side_effects(cfg, config_file):
    from mlflow import MlflowClient

    from flows.ingest import ingest_flow

    # The corpus lives inside the data folder, so its audio is DVC-versioned too.
    root = cfg.data_dir / "raw" / "broken"
    expected = make_broken_folder(root)
    cfg.validation.max_failure_rate = 1.0  # this folder is mostly broken on purpose
    out = ingest_flow("folder", str(root), profile="test", config_file=config_file(cfg))

    # Every file is in the manifest or the quarantine (with the right reason), or counted as excluded/skipped.
    manifest = {Path(r["audio_path"]).relative_to(root).as_posix(): r for r in read_jsonl(out["manifest"])}
    quarantine = {Path(q["audio_path"]).relative_to(root).as_posix(): q for q in read_jsonl(out["quarantine"])}
    assert not set(manifest) & set(quarantine)
    for rel, outcome in expected.items():
        if outcome == ACCEPTED:
            assert rel in manifest, rel
        elif outcome in ("excluded", "skipped"):
            assert rel not in manifest and rel not in quarantine, rel
        else:
            assert quarantine[rel]["reason"].split(":")[0] == outcome, (rel, quarantine.get(rel))
    assert set(manifest) | set(quarantine) == {r for r, o in expected.items() if o not in ("excluded", "skipped")}
    assert manifest["angry/stereo_8k.wav"]["emotion"] == "angry" and manifest["fear/clip.mp3"]["emotion"] == "fear"
    assert {q["stage"] for q in quarantine.values()} == {"manifest", "validate"}

    c = out["counts"]
    assert c["files_found"] == len(expected) == c["records"] + c["quarantined"] + c["excluded"] + c["skipped"]
    assert (c["records"], c["quarantined"], c["excluded"], c["skipped"]) == (4, 7, 1, 1)
    assert c["excluded_by_label"] == {"boredom": 1}
    assert c["by_label"]["angry"] == 1 and sum(c["by_label"].values()) == 4

    # DVC: the dataset and the corpus audio are tracked and pushed to the workspace's local remote.
    loc = dvc_location(cfg)
    assert not loc.scm and loc.root == cfg.workspace.resolve()
    dataset_rel = "data/manifests/folder"
    audio_rel = "data/raw/broken"
    assert set(out["data_version"]) == {dataset_rel, audio_rel}
    for rel, md5 in out["data_version"].items():
        pointer = loc.root / f"{rel}.dvc"
        assert pointer.is_file() and md5 in pointer.read_text()
        assert md5.endswith(".dir") and remote_has(md5, cfg)

    # MLflow: a finished run with the counts, params, data version and the quarantine table.
    client = MlflowClient(cfg.tracking_uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert m["records"] == 4 and m["quarantined"] == 7 and m["excluded"] == 1 and m["files_found"] == 13
    assert m["quarantine.too_long"] == 1 and m["quarantine.too_short"] == 1
    assert m["label.fear"] == 1 and m["split.train"] == 4
    assert m["excluded.boredom"] == 1
    assert p["corpus"] == "folder" and float(p["audio.max_duration_s"]) == cfg.audio.max_duration_s
    assert t["stage"] == "ingest" and t["profile"] == "test" and t["git_sha"]
    assert t[f"data_version.{dataset_rel}"] == out["data_version"][dataset_rel]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "ingest")}
    assert {"ingest/quarantine.json", "ingest/counts.png", "ingest/dataset"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "ingest/quarantine.json", str(cfg.workspace)))
    table = json.loads(local.read_text())
    assert len(table["data"]) == 7 and "reason" in table["columns"]
    gx = json.loads(Path(client.download_artifacts(run.info.run_id, "validation/gx_results.json", str(cfg.workspace))).read_text())
    failed = [r["expectation_config"]["type"] for r in gx["suites"]["manifest"]["results"] if not r["success"]]
    assert failed == ["expect_column_values_to_be_between"] and gx["reasons"]["silent"] == 1

    # Idempotent: re-ingesting the unchanged corpus reproduces the same data version.
    again = ingest_flow("folder", str(root), profile="test", config_file=config_file(cfg))
    assert again["data_version"] == out["data_version"] and again["run_id"] != out["run_id"]


def test_failure_rate_above_bound_stops_the_flow_before_versioning(cfg, config_file):
    from mlflow import MlflowClient

    from emotionthinker.validation import ValidationFailed
    from flows.ingest import ingest_flow

    root = cfg.workspace / "incoming"
    (root / "sad").mkdir(parents=True)
    sf.write(root / "sad" / "ok.wav", speechlike(1.0), SR)
    sf.write(root / "sad" / "quiet.wav", np.zeros(SR, dtype=np.float32), SR)
    (root / "sad" / "broken.wav").write_bytes(b"RIFF....WAVE")
    cfg.validation.max_failure_rate = 0.5
    with pytest.raises(ValidationFailed, match=r"66\.7% of records failed"):
        ingest_flow("folder", str(root), profile="test", config_file=config_file(cfg))

    assert not (cfg.data_dir / "manifests" / "folder").exists()  # nothing replaced, nothing versioned
    report = read_jsonl(cfg.workspace / "reports" / "ingest" / "folder" / "manifest.quarantine.jsonl")
    assert sorted(q["reason"] for q in report) == ["corrupt", "silent"]
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs(client.get_experiment_by_name(cfg.services.mlflow_experiment).experiment_id)
    assert run.info.status == "FAILED" and "ValidationFailed" in run.data.tags["error"]
    assert run.data.metrics["quarantined"] == 2
