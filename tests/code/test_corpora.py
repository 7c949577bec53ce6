"""Corpus adapters on tiny fixtures laid out like each official release, and on the real shared data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import corpus_fixtures as F
from tests.conftest import EMODB_DIR, RAVDESS_DIR, requires_emodb, requires_ravdess
from emotionthinker.config import PROJECT_ROOT
from emotionthinker.corpora import (
    ADAPTERS, CorpusLayoutError, UnknownCorpusError, build_manifest, quarantine_path, write_manifest,
)
from emotionthinker.labels import LABELS
from emotionthinker.records import read_jsonl, stable_id


def by_name(result) -> dict:
    return {Path(r.audio_path).name: r for r in result.records}


def reasons(result) -> Counter:
    return Counter(q.reason for q in result.quarantined)


def test_registry_has_every_corpus():
    assert set(ADAPTERS) == {"ravdess", "emodb", "iemocap", "meld", "savee", "cremad", "tess", "jsonl", "folder", "demo"}
    assert all(a.layout and a.splits for a in ADAPTERS.values())


def test_ravdess_release_layout(tmp_path, cfg):
    expect = F.make_ravdess(tmp_path / "ravdess")
    res = build_manifest("ravdess", tmp_path / "ravdess", cfg)
    assert len(res.records) == expect["records"]
    assert res.skipped == Counter(song=1) and not res.excluded
    assert reasons(res) == Counter(bad_name=2, corrupt=1)
    recs = by_name(res)
    calm = recs["03-01-02-02-02-01-01.wav"]
    assert (calm.emotion, calm.source_label, calm.intensity) == ("neutral", "calm", "strong")
    assert (calm.speaker, calm.gender, calm.split) == ("ravdess-01", "male", "train")
    assert calm.transcription == "Dogs are sitting by the door."
    fear = recs["03-01-06-01-01-02-02.wav"]
    assert (fear.emotion, fear.gender, fear.intensity, fear.transcription) == (
        "fear", "female", "normal", "Kids are talking by the door.")
    assert recs["03-01-07-02-02-02-02.wav"].emotion == "contempt or disgust"
    assert (recs["03-01-08-01-01-01-21.wav"].emotion, recs["03-01-08-01-01-01-21.wav"].split) == ("surprise", "validation")
    assert recs["03-01-03-02-02-01-24.wav"].split == "test"
    assert calm.id == stable_id("ravdess", "Actor_01/03-01-02-02-02-01-01.wav")
    assert all(abs(r.duration_s - 0.5) < 1e-6 and Path(r.audio_path).is_absolute() for r in res.records)
    assert [r.id for r in res.records] == [r.id for r in sorted(res.records, key=lambda r: r.audio_path)]
    assert all(q.stage == "manifest" and q.detail for q in res.quarantined)


def test_ids_survive_moving_the_corpus(tmp_path, cfg):
    F.make_ravdess(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    ids_a = [r.id for r in build_manifest("ravdess", tmp_path / "a", cfg).records]
    ids_b = [r.id for r in build_manifest("ravdess", tmp_path / "elsewhere" / "b", cfg).records]
    assert ids_a == ids_b and len(set(ids_a)) == len(ids_a)


def test_emodb_release_layout(tmp_path, cfg):
    F.make_emodb(tmp_path / "emodb")
    res = build_manifest("emodb", tmp_path / "emodb", cfg)
    assert res.excluded == Counter(boredom=2)
    assert reasons(res) == Counter(bad_name=2, corrupt=1)
    recs = by_name(res)
    assert {n: (r.emotion, r.gender, r.split) for n, r in recs.items()} == {
        "03a01Wa.wav": ("angry", "male", "train"),
        "09b01Ea.wav": ("contempt or disgust", "female", "train"),
        "12a04Ab.wav": ("fear", "male", "validation"),
        "14b10Fc.wav": ("happy", "female", "validation"),
        "15a05Tb.wav": ("sad", "male", "test"),
        "16a07Na.wav": ("neutral", "female", "test"),
    }
    assert recs["09b01Ea.wav"].transcription == "Was sind denn das für Tüten, die da unter dem Tisch stehen?"
    assert recs["03a01Wa.wav"].source_label == "anger" and recs["03a01Wa.wav"].language == "de"


def test_iemocap_sessions_labels_and_transcripts(tmp_path, cfg):
    release = F.make_iemocap(tmp_path)
    res = build_manifest("iemocap", tmp_path, cfg)
    assert res.excluded == Counter(fru=1, xxx=1)
    assert reasons(res) == Counter(unreadable_path=1, no_label=1)
    recs = {r.audio_path.rsplit("/", 1)[1][:-4]: r for r in res.records}
    assert set(recs) == {"Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses04M_script01_1_F000",
                         "Ses05F_impro02_M000", "Ses05F_impro02_F000"}
    f000 = recs["Ses01F_impro01_F000"]
    assert (f000.emotion, f000.speaker, f000.gender, f000.split, f000.transcription) == (
        "neutral", "iemocap-Ses01F", "female", "train", "Excuse me.")
    assert (f000.valence, f000.arousal, f000.dominance, f000.session) == (2.5, 3.0, 3.5, 1)
    exc = recs["Ses01F_impro01_M000"]
    assert (exc.emotion, exc.source_label, exc.speaker, exc.gender) == ("happy", "exc", "iemocap-Ses01M", "male")
    script = recs["Ses04M_script01_1_F000"]
    assert (script.split, script.speaker, script.transcription) == ("validation", "iemocap-Ses04F", "I don't know.")
    assert {recs["Ses05F_impro02_M000"].split, recs["Ses05F_impro02_F000"].split} == {"test"}
    assert recs["Ses05F_impro02_F000"].emotion == "surprise"
    # The release folder itself as root gives the same ids (paths relative to the release).
    assert [r.id for r in build_manifest("iemocap", release, cfg).records] == [r.id for r in res.records]


def test_meld_extracts_audio_from_clips_once(tmp_path, cfg):
    cfg.paths.cache = tmp_path / "cache"
    F.make_meld(tmp_path / "MELD.Raw")
    res = build_manifest("meld", tmp_path / "MELD.Raw", cfg)
    assert reasons(res) == Counter(unreadable_path=1, no_audio_stream=1, corrupt=1)
    assert {Path(q.audio_path).name for q in res.quarantined} == {"dia1_utt1.mp4", "dia1_utt0.mp4", "dia0_utt1.mp4"}
    recs = {(r.split, r.dialogue_id, r.utterance_id): r for r in res.records}
    assert set(recs) == {("train", 0, 0), ("train", 0, 1), ("validation", 0, 0), ("test", 3, 2)}
    joy = recs[("train", 0, 0)]
    assert (joy.emotion, joy.source_label, joy.speaker, joy.sentiment) == ("happy", "joy", "meld-Rachel", "positive")
    assert joy.transcription == "Oh my God, you\u2019re here!"  # the release's mojibake undone
    assert recs[("validation", 0, 0)].emotion == "surprise" and recs[("test", 3, 2)].emotion == "fear"
    for rec in res.records:
        info = sf.info(rec.audio_path)
        assert (info.samplerate, info.channels) == (16000, 1)
        assert str(tmp_path / "cache" / "meld-audio") in rec.audio_path and rec.video_path.endswith(".mp4")
        assert 0.55 < rec.duration_s < 0.7
        y, _ = sf.read(rec.audio_path)
        spectrum = np.abs(np.fft.rfft(y))
        assert abs(np.argmax(spectrum) * 16000 / y.size - 440) < 10  # the clip's tone survived
    mtimes = {r.audio_path: os.stat(r.audio_path).st_mtime_ns for r in res.records}
    again = build_manifest("meld", tmp_path / "MELD.Raw", cfg)
    assert {r.audio_path: os.stat(r.audio_path).st_mtime_ns for r in again.records} == mtimes
    assert [r.id for r in again.records] == [r.id for r in res.records]


def test_meld_without_csvs_is_a_layout_error(tmp_path, cfg):
    (tmp_path / "train_splits").mkdir()
    with pytest.raises(CorpusLayoutError, match="train_sent_emo.csv"):
        build_manifest("meld", tmp_path, cfg)


def test_savee_speakers_and_codes(tmp_path, cfg):
    F.make_savee(tmp_path)
    res = build_manifest("savee", tmp_path, cfg)
    assert reasons(res) == Counter(bad_name=1, corrupt=1)
    got = {(r.speaker, Path(r.audio_path).stem): (r.emotion, r.split) for r in res.records}
    assert got == {
        ("savee-DC", "a01"): ("angry", "train"), ("savee-DC", "sa02"): ("sad", "train"),
        ("savee-JE", "su03"): ("surprise", "train"), ("savee-JK", "d01"): ("contempt or disgust", "validation"),
        ("savee-KL", "n30"): ("neutral", "test"), ("savee-KL", "h04"): ("happy", "test"),
    }
    assert {r.gender for r in res.records} == {"male"}


def test_cremad_texts_demographics_and_actor_split(tmp_path, cfg):
    F.make_cremad(tmp_path)
    res = build_manifest("cremad", tmp_path, cfg)
    assert reasons(res) == Counter(empty=1, bad_name=1)
    recs = {Path(r.audio_path).stem: r for r in res.records}
    a = recs["1001_DFA_ANG_XX"]
    assert (a.emotion, a.gender, a.speaker_age, a.transcription, a.intensity, a.split) == (
        "angry", "male", 51, "Don't forget a jacket.", "unspecified", "train")
    assert (recs["1002_IEO_HAP_HI"].gender, recs["1002_IEO_HAP_HI"].intensity) == ("female", "high")
    assert (recs["1074_TIE_SAD_LO"].split, recs["1074_TIE_SAD_LO"].emotion) == ("validation", "sad")
    assert (recs["1091_WSI_FEA_MD"].split, recs["1091_WSI_FEA_MD"].gender) == ("test", "unknown")  # not in the CSV
    assert recs["1050_ITH_DIS_XX"].emotion == "contempt or disgust"
    assert recs["1090_MTI_NEU_XX"].transcription == "Maybe tomorrow it will be cold."


def test_tess_folders_words_and_pleasant_surprise(tmp_path, cfg):
    F.make_tess(tmp_path)
    res = build_manifest("tess", tmp_path, cfg)
    assert reasons(res) == Counter(bad_name=1, corrupt=1)
    recs = {Path(r.audio_path).stem: r for r in res.records}
    assert len(recs) == 7
    assert (recs["OAF_bath_ps"].emotion, recs["OAF_bath_ps"].source_label) == ("surprise", "pleasant_surprise")
    assert recs["YAF_dog_ps"].emotion == "surprise" and recs["YAF_dog_disgust"].emotion == "contempt or disgust"
    assert recs["OA_bite_neutral"].speaker == "tess-OAF"  # speaker from the folder when the file name is off
    assert recs["YAF_chair_sad"].transcription == "Say the word chair."
    assert {r.gender for r in res.records} == {"female"}
    # Split by word: the same word never lands in two splits.
    splits_by_word = {}
    for r in res.records:
        splits_by_word.setdefault(r.word, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_by_word.values())


def test_jsonl_emotioncot_format(tmp_path, cfg):
    clips = tmp_path / "clips"
    F.write_wav(clips / "a.wav")
    F.write_wav(clips / "b.wav")
    F.write_wav(clips / "c.wav")
    outside = F.write_wav(tmp_path / "elsewhere" / "d.wav")
    ann = {"pitch_level": "high", "energy_level": "high"}
    meta = F.write_jsonl_lines(tmp_path / "data" / "cot.jsonl", [
        {"audio_path": "../clips/a.wav", "transcription": "Hello there.", "emotion": "Contempt/Disgust",
         "annotations": ann, "gender": "Female", "speaker": "s1"},
        {"audio_path": "../clips/b.wav", "transcription": "", "emotion": " Happy ", "split": "dev", "id": "x-1"},
        '{"audio_path": "../clips/c.wav", "transcription": "Ugh.\u2028Fine.", "emotion": "frustrated"}',  # raw U+2028
        {"audio_path": str(outside), "transcription": "Hm?", "emotion": "confused", "split": "test"},
        {"audio_path": "../clips/missing.wav", "transcription": "", "emotion": "sad"},
        {"audio_path": "../clips/a.wav", "transcription": "again", "emotion": "angry"},
        {"audio_path": "../clips/b.wav", "emotion": "sad", "split": "holdout"},
        {"transcription": "no audio"},
        {"audio_path": "../clips/c.wav", "transcription": "no label"},
        "{not json",
        "",
    ])
    res = build_manifest("jsonl", meta, cfg)
    assert res.excluded == Counter(frustrated=1)
    assert reasons(res) == Counter(bad_metadata=3, unreadable_path=1, duplicate=1, no_label=1)
    recs = {Path(r.audio_path).name: r for r in res.records}
    a = recs["a.wav"]
    assert (a.emotion, a.source_label, a.gender, a.speaker, a.split) == (
        "contempt or disgust", "Contempt/Disgust", "female", "s1", "train")
    assert a.annotations == ann and a.transcription == "Hello there."
    b = recs["b.wav"]
    assert (b.emotion, b.split, b.transcription, b.source_id) == ("happy", "validation", None, "x-1")
    d = recs["d.wav"]
    assert (d.emotion, d.split, d.audio_path) == ("confused", "test", str(outside))
    assert a.id == stable_id("jsonl", "../clips/a.wav") and a.audio_path == str(clips / "a.wav")
    # A folder of .jsonl files works too.
    assert len(build_manifest("jsonl", meta.parent, cfg).records) == 3


def test_folder_of_broken_files_reconciles(tmp_path, cfg):
    root = tmp_path / "dropbox"
    expected = F.make_broken_folder(root)
    res = build_manifest("folder", root, cfg)
    outcome = {Path(r.audio_path).relative_to(root).as_posix(): "record" for r in res.records}
    outcome |= {q.relative_path: q.reason for q in res.quarantined}
    assert {k: v for k, v in expected.items() if v not in ("excluded", "skipped")} == outcome
    assert res.excluded == Counter(frustrated=1) and res.skipped == Counter(hidden=1)
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert len(res.records) + len(res.quarantined) + sum(res.excluded.values()) + sum(res.skipped.values()) == n_files
    assert all(q.detail for q in res.quarantined)
    recs = {Path(r.audio_path).name: r for r in res.records}
    assert recs["8k_stereo.wav"].emotion == "happy" and recs["8k_stereo.wav"].speaker == "unknown"


def test_demo_metadata_keeps_synthesis_settings(tmp_path, cfg):
    F.write_wav(tmp_path / "clips" / "angry_000.wav", seconds=1.0)
    F.write_wav(tmp_path / "clips" / "whisper_000.wav", seconds=1.0)
    settings = {"voice": "en-us+f3", "pitch": 70, "pitch_range": 90, "speed_wpm": 190, "amplitude": 180}
    F.write_jsonl_lines(tmp_path / "metadata.jsonl", [
        {"audio_path": "clips/angry_000.wav", "emotion": "angry", "transcription": "Stop it right now!",
         "speaker": "demo-en-us+f3", "gender": "female", "split": "train", "synthesis": settings},
        {"audio_path": "clips/whisper_000.wav", "emotion": "whisper", "transcription": "Keep it quiet.",
         "speaker": "demo-en-us", "gender": "male", "split": "test", "whispered": True},
    ])
    res = build_manifest("demo", tmp_path, cfg)
    assert not res.quarantined and not res.excluded
    angry, whisper = res.records
    assert (angry.emotion, angry.gender, angry.split, angry.synthesis) == ("angry", "female", "train", settings)
    assert (whisper.emotion, whisper.whispered, whisper.speaker) == ("whisper", True, "demo-en-us")
    assert angry.id == stable_id("demo", "clips/angry_000.wav")
    with pytest.raises(CorpusLayoutError, match="metadata.jsonl"):
        build_manifest("demo", tmp_path / "clips", cfg)


def test_write_manifest_is_deterministic_and_round_trips(tmp_path, cfg):
    F.make_ravdess(tmp_path / "r")
    res = build_manifest("ravdess", tmp_path / "r", cfg)
    out = tmp_path / "out" / "ravdess.jsonl"
    summary = write_manifest(res, out)
    assert quarantine_path(out) == tmp_path / "out" / "ravdess.quarantine.jsonl"
    rows, quarantine = read_jsonl(out), read_jsonl(quarantine_path(out))
    assert [r["id"] for r in rows] == [r.id for r in res.records]
    assert {r["emotion"] for r in rows} <= set(LABELS) and all("intensity" in r for r in rows)
    assert len(quarantine) == summary["quarantined"] == 3 and summary["records"] == 6
    assert summary["skipped"] == {"song": 1} and summary["by_split"] == {"test": 1, "train": 4, "validation": 1}
    first = out.read_bytes()
    write_manifest(build_manifest("ravdess", tmp_path / "r", cfg), out)
    assert out.read_bytes() == first


def test_bad_requests_raise_clear_errors(tmp_path, cfg):
    with pytest.raises(UnknownCorpusError, match="ravdess"):
        build_manifest("voxceleb", tmp_path, cfg)
    with pytest.raises(CorpusLayoutError, match="does not exist"):
        build_manifest("ravdess", tmp_path / "nope", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusLayoutError, match="Actor_NN"):
        build_manifest("ravdess", tmp_path / "empty", cfg)
    with pytest.raises(CorpusLayoutError, match="Session1"):
        build_manifest("iemocap", tmp_path / "empty", cfg)


def test_cli_manifest_command(tmp_path):
    F.make_ravdess(tmp_path / "r")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    env.update(ET_PATHS__WORKSPACE=str(tmp_path / "ws"), ET_PATHS__DATA=str(tmp_path / "ws" / "data"))
    # As a group, as the console script runs it once the CLI has several commands (Typer runs a lone
    # command without its name).
    launcher = "import sys; from typer.main import get_group; from emotionthinker.cli import app; get_group(app)(sys.argv[1:])"
    cmd = [sys.executable, "-c", launcher, "manifest", "--corpus", "ravdess",
           "--root", str(tmp_path / "r"), "--out", str(tmp_path / "m.jsonl"), "--profile", "test"]
    done = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ravdess: 6 records" in done.stdout and "quarantined: 3" in done.stdout and "song=1" in done.stdout
    assert len(read_jsonl(tmp_path / "m.jsonl")) == 6 and len(read_jsonl(tmp_path / "m.quarantine.jsonl")) == 3
    bad = subprocess.run([*cmd[:5], "nosuch", *cmd[6:]], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "unknown corpus" in bad.stderr
    # An EmoDB folder given as RAVDESS: every file quarantined. The files are written, but the command fails.
    F.make_emodb(tmp_path / "e")
    wrong = subprocess.run([*cmd[:7], str(tmp_path / "e"), *cmd[8:]], env=env, cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert len(read_jsonl(tmp_path / "m.quarantine.jsonl")) == 11
    assert wrong.returncode == 1 and "no usable record" in wrong.stderr and "ravdess: 0 records" in wrong.stdout
    # An --out that cannot be written (a file where a folder is needed): one line naming it, no traceback.
    (tmp_path / "afile").write_text("")
    entry = "import sys; from emotionthinker.cli import main; sys.argv[0] = 'emotionthinker'; main()"
    unwritable = subprocess.run([sys.executable, "-c", entry, *cmd[3:9], str(tmp_path / "afile" / "m.jsonl"),
                                 *cmd[10:]], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert unwritable.returncode == 1 and "Traceback" not in unwritable.stderr, unwritable.stderr
    assert unwritable.stderr.strip() == f"cannot use {tmp_path / 'afile'}: a file is there where a folder is needed"


# -- the real corpora in ../shared/data ---------------------------------------
RAVDESS_LABELS = {"01": "neutral", "02": "neutral", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
                  "07": "contempt or disgust", "08": "surprise"}


@requires_ravdess
@pytest.mark.shared_data
def test_real_ravdess(cfg):
    res = build_manifest("ravdess", RAVDESS_DIR, cfg)
    assert len(res.records) == 120 and not res.quarantined and not res.excluded
    for r in res.records:
        fields = Path(r.audio_path).stem.split("-")
        assert r.emotion == RAVDESS_LABELS[fields[2]]
        assert r.gender == ("male" if fields[6] == "01" else "female")
        assert r.transcription == {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}[fields[4]]
        assert r.intensity == {"01": "normal", "02": "strong"}[fields[3]]
        assert 2.5 < r.duration_s < 6 and r.split == "train"
    assert Counter(r.source_label for r in res.records)["calm"] == 16
    assert Counter(r.emotion for r in res.records)["neutral"] == 24


@requires_emodb
@pytest.mark.shared_data
def test_real_emodb(cfg):
    res = build_manifest("emodb", EMODB_DIR, cfg)
    n_files = len(list(EMODB_DIR.glob("*.wav")))
    assert n_files == 535
    assert len(res.records) + sum(res.excluded.values()) == 535 and not res.quarantined
    assert res.excluded == Counter(boredom=81)
    assert "boredom" not in {r.source_label for r in res.records}
    genders = {r.speaker: r.gender for r in res.records}
    assert genders["emodb-03"] == "male" and genders["emodb-08"] == "female" and len(genders) == 10
    assert {r.split for r in res.records} == {"train", "validation", "test"}
    assert all(r.transcription and abs(r.duration_s - 2.0) < 1e-3 for r in res.records)
