"""The espeak-ng demo corpus: all nine classes, exact settings per clip, and a prosody oracle that holds.

The corpus is synthesised once per module on the `test` profile (2 clips per
class, 6 voices); the oracle checks measure it independently with parselmouth.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import parselmouth
import pytest
import soundfile as sf

from emotionthinker.config import PROJECT_ROOT, ConfigError, load_config
from emotionthinker.demo.design import ENERGY_LEVELS, PITCH_LEVELS, SPEED_LEVELS, plan_corpus
from emotionthinker.demo.espeak import split_voice, voice_gender
from emotionthinker.democorpus import (
    GLIDES_FILE,
    METADATA_FILE,
    EspeakNotFoundError,
    VoiceError,
    synthesize_demo_corpus,
)
from emotionthinker.labels import LABELS
from emotionthinker.records import read_jsonl

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _test_cfg(tmp: Path, **demo):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    return load_config("test", environ=env, overrides={
        "paths": {"workspace": str(tmp / "ws"), "data": str(tmp / "ws" / "data")},
        **({"demo": demo} if demo else {}),
    })


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    cfg = _test_cfg(tmp)
    root = tmp / "corpus"
    metadata = synthesize_demo_corpus(root, cfg)
    return cfg, root, metadata


def _f0_st(y: np.ndarray, sr: int, gender: str) -> tuple[np.ndarray, np.ndarray]:
    floor, ceiling = (50, 300) if gender == "male" else (100, 500)
    pitch = parselmouth.Sound(y.astype(np.float64), sampling_frequency=sr).to_pitch_ac(
        time_step=0.01, pitch_floor=floor, pitch_ceiling=ceiling)
    f0 = pitch.selected_array["frequency"]
    voiced = f0 > 0
    return pitch.xs()[voiced], 12 * np.log2(f0[voiced] / 100.0)


def _measure(root: Path, rec: dict) -> dict[str, float]:
    """Median F0 (st re 100 Hz), RMS over speech frames (dBFS), syllables per second of speech."""
    y, sr = sf.read(root / rec["audio_path"], dtype="float32")
    _, st = _f0_st(y, sr, rec["gender"])
    n = int(0.02 * sr)
    power = (y[: len(y) // n * n].reshape(-1, n).astype(np.float64) ** 2).mean(axis=1)
    db = 10 * np.log10(power + 1e-20)
    speech = db > db.max() - 35
    return {
        "pitch": float(np.median(st)) if st.size > 10 else float("nan"),
        "energy": float(10 * np.log10(power[speech].mean())),
        "speed": rec["n_syllables"] / (speech.sum() * 0.02),
        "voiced_fraction": st.size / max(1, len(db) * 2),  # 10 ms pitch frames vs 20 ms energy frames
    }


def test_corpus_has_every_class_with_its_exact_settings(corpus):
    cfg, root, metadata = corpus
    records = read_jsonl(metadata)
    assert metadata == root / METADATA_FILE
    assert Counter(r["emotion"] for r in records) == {label: cfg.demo.clips_per_class for label in LABELS}
    assert {r["split"] for r in records} == {"train", "validation", "test"}
    speakers = {r["speaker"] for r in records}
    assert len(speakers) >= 4 and {r["gender"] for r in records} == {"male", "female"}
    for r in records:
        path = root / r["audio_path"]
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (16000, 1) and 1.0 < info.duration < 10.0
        y, _ = sf.read(path, dtype="float32")
        assert np.abs(y).max() < 0.99, f"{path} clips"
        s = r["synthesis"]
        # The stored command line is the exact rendering: its flags carry the stored settings.
        for flag, key in (("-v", "voice"), ("-p", "pitch"), ("-s", "speed"), ("-a", "amplitude")):
            assert f"{flag} {s[key]} " in s["command"]
        assert f'range="{s["pitch_range"]}"' in s["ssml"] and r["transcription"] in s["ssml"]
        assert r["transcription"] and r["n_syllables"] >= 5
        assert r["split"] == ("validation" if r["speaker"] in cfg.demo.validation_voices
                              else "test" if r["speaker"] in cfg.demo.test_voices else "train")
        if r["emotion"] == "whisper":
            assert split_voice(s["voice"])[1] in {"whisper", "whisperf"} and r["design_pitch_level"] is None
        else:
            assert s["voice"] == r["speaker"] and r["design_pitch_level"] in PITCH_LEVELS
        assert r["design_speed_level"] in SPEED_LEVELS and r["design_energy_level"] in ENERGY_LEVELS


def test_prosody_oracle_holds_when_measured(corpus):
    """Within every voice, measured F0, energy and rate follow the designed levels, with clear margins."""
    _, root, metadata = corpus
    records = read_jsonl(metadata)
    measures = [_measure(root, r) for r in records]
    dims = {"pitch": ("design_pitch_level", PITCH_LEVELS), "energy": ("design_energy_level", ENERGY_LEVELS),
            "speed": ("design_speed_level", SPEED_LEVELS)}
    # Smallest step between neighbouring levels: semitones, dB, and rate ratio in semitone-like log units.
    min_step = {"pitch": 2.0, "energy": 3.0, "speed": 2.0}
    for dim, (key, levels) in dims.items():
        per_voice: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r, m in zip(records, measures):
            if r[key] is not None:
                value = 12 * np.log2(m[dim]) if dim == "speed" else m[dim]
                per_voice[r["speaker"]][levels.index(r[key])].append(value)
        checked = 0
        for voice, by_level in per_voice.items():
            means = [np.mean(by_level[i]) for i in sorted(by_level)]
            steps = np.diff(means)
            assert (steps > min_step[dim]).all(), f"{dim} of {voice}: level means {np.round(means, 2)}"
            checked += len(steps)
        assert checked >= len(per_voice)  # every voice contributed at least one ordered pair
    whispers = [m for r, m in zip(records, measures) if r["emotion"] == "whisper"]
    assert whispers and all(m["voiced_fraction"] < 0.05 for m in whispers)


def test_glides_follow_their_designed_contour(corpus):
    cfg, root, _ = corpus
    glides = read_jsonl(root / GLIDES_FILE)
    assert Counter(g["design_intonation"] for g in glides) == {
        p: cfg.demo.glides_per_pattern for p in ("rising", "falling", "rising-falling", "falling-rising", "flat")}
    for g in glides:
        y, sr = sf.read(root / g["audio_path"], dtype="float32")
        t, st = _f0_st(y, sr, g["gender"])
        pts = np.array(g["design_f0_points"])
        designed = np.interp(t, pts[:, 0], 12 * np.log2(pts[:, 1] / 100.0))
        assert np.median(np.abs(st - designed)) < 1.0, g["audio_path"]
        edges = np.linspace(t[0], t[-1], 4)
        first, mid, last = (np.median(st[(t >= a) & (t <= b)]) for a, b in zip(edges, edges[1:]))
        half = g["design_span_st"] / 4  # thirds' medians sit well inside the designed span
        expect = {
            "rising": first + half < mid and mid + half < last,
            "falling": first > mid + half and mid > last + half,
            "rising-falling": mid > first + half and mid > last + half,
            "falling-rising": mid < first - half and mid < last - half,
            "flat": max(first, mid, last) - min(first, mid, last) < 0.5,
        }[g["design_intonation"]]
        assert expect, f"{g['design_intonation']}: thirds {first:.1f} {mid:.1f} {last:.1f} st"


def test_rerun_skips_existing_clips_and_prunes_stale_ones(corpus):
    cfg, root, metadata = corpus
    before_meta = metadata.read_bytes()
    wavs = sorted(root.rglob("*.wav"))
    mtimes = {p: p.stat().st_mtime_ns for p in wavs}
    stale = root / "clips" / "sad" / "sad-u99-0000000000.wav"
    stale.write_bytes(b"left by an older configuration")
    synthesize_demo_corpus(root, cfg)
    assert metadata.read_bytes() == before_meta
    assert not stale.exists()
    assert {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*.wav"))} == mtimes


def test_plan_is_deterministic_balanced_and_seeded():
    cfg = load_config("tiny", environ={})
    genders = {v: voice_gender(v, "espeak-ng") for v in cfg.demo.voices}
    plan = plan_corpus(cfg.demo, genders)
    assert plan == plan_corpus(cfg.demo, genders)
    assert plan != plan_corpus(cfg.demo.model_copy(update={"seed": 1}), genders)
    n = len(plan)
    assert n == 9 * cfg.demo.clips_per_class
    # Speed and energy: exactly a third per level; pitch: balanced up to the whispers (no F0).
    assert Counter(p.design_speed_level for p in plan) == {lvl: n // 3 for lvl in SPEED_LEVELS}
    assert Counter(p.design_energy_level for p in plan) == {lvl: n // 3 for lvl in ENERGY_LEVELS}
    for gender in ("male", "female"):
        counts = Counter(p.design_pitch_level for p in plan if p.gender == gender and p.design_pitch_level)
        assert max(counts.values()) - min(counts.values()) <= 3, (gender, counts)
    # Within a voice, a higher level always means a higher espeak-ng setting.
    for voice in cfg.demo.voices:
        mine = [p for p in plan if p.speaker == voice and p.emotion != "whisper"]
        for levels, attr in ((PITCH_LEVELS, "pitch"), (SPEED_LEVELS, "speed")):
            field = "design_pitch_level" if attr == "pitch" else "design_speed_level"
            ranges = [[getattr(p, attr) for p in mine if getattr(p, field) == lvl] for lvl in levels]
            assert all(max(lo) < min(hi) for lo, hi in zip(ranges, ranges[1:]) if lo and hi)
        amps = [[p.amplitude_nominal for p in mine if p.design_energy_level == lvl] for lvl in ENERGY_LEVELS]
        assert all(max(lo) < min(hi) for lo, hi in zip(amps, amps[1:]) if lo and hi)
    # Every class meets more than one level of each dimension: levels are not a proxy for the class.
    for label in LABELS:
        mine = [p for p in plan if p.emotion == label]
        assert len({p.design_speed_level for p in mine}) >= 2 and len({p.design_energy_level for p in mine}) >= 2


def test_missing_espeak_names_the_install_command(tmp_path):
    cfg = _test_cfg(tmp_path, espeak_binary="espeak-ng-not-installed")
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        synthesize_demo_corpus(tmp_path / "out", cfg)


def test_voice_variant_espeak_ignores_is_refused(tmp_path):
    # espeak-ng 1.51 renders 'en-gb+f3' exactly like 'en-gb': a "female" voice that is not.
    cfg = _test_cfg(tmp_path, voices=["en-gb+f3"], validation_voices=[], test_voices=[], glides_per_pattern=0)
    with pytest.raises(VoiceError, match="ignores variant 'f3'"):
        synthesize_demo_corpus(tmp_path / "out", cfg)
    cfg = _test_cfg(tmp_path, voices=["en-us+nosuchvariant"], validation_voices=[], test_voices=[])
    with pytest.raises(VoiceError, match="no voice variant"):
        synthesize_demo_corpus(tmp_path / "out", cfg)


def test_demo_config_rejects_split_voices_not_in_the_voice_list():
    with pytest.raises(ConfigError, match="not in demo.voices"):
        load_config("test", environ={}, overrides={"demo": {"test_voices": ["en-us+f9"]}})


def test_cli_writes_the_corpus(corpus, tmp_path):
    _, root, metadata = corpus
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    env.update(ET_PATHS__WORKSPACE=str(tmp_path / "ws"), ET_PATHS__DATA=str(tmp_path / "ws" / "data"))
    before = metadata.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "emotionthinker.cli", "demo-corpus", "--profile", "test",
                           "--out", str(root)], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "18 clips" in proc.stdout and str(metadata) in proc.stdout
    assert metadata.read_bytes() == before
    assert json.loads(before.splitlines()[0])["synthesis"]["command"].startswith("espeak-ng -v ")
