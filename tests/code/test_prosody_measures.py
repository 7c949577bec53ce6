"""Energy, speech frames, voicing, syllable rate; padding invariance and RAVDESS checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import RAVDESS_DIR, requires_ravdess
from emotionthinker.audio import load_audio
from emotionthinker.prosody.levels import assign_levels, fit_calibration
from emotionthinker.prosody.measures import measure_prosody

SR = 16000


def _voice(f0_hz: float, dur: float, amp: float = 0.3) -> np.ndarray:
    phase = 2 * np.pi * f0_hz * np.arange(int(dur * SR)) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 11))
    return amp * y / np.max(np.abs(y))


def _syllables(n: int, rate_hz: float = 4.0, f0_hz: float = 140.0) -> np.ndarray:
    """n 'syllables': a voice whose amplitude rises and falls n times (raised-cosine bursts)."""
    dur = n / rate_hz
    t = np.arange(int(dur * SR)) / SR
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * rate_hz * t)  # n humps, zero between
    return (_voice(f0_hz, dur) * envelope).astype(np.float32)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def test_rms_dbfs_of_a_steady_sine():
    from emotionthinker.config import ProsodyConfig

    y = (0.5 * np.sin(2 * np.pi * 200 * np.arange(3 * SR) / SR)).astype(np.float32)
    m = measure_prosody(y, SR, ProsodyConfig())
    # -9.03 dBFS; the on/off ramps of the analysis window pull the mean down a little
    assert m.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.25)
    assert m.voiced_fraction > 0.95
    assert m.duration_s == pytest.approx(3.0)


def test_speech_duration_excludes_silence_and_long_pauses(cfg):
    y = np.concatenate([_silence(0.5), _voice(150, 0.8), _silence(0.6), _voice(150, 0.7), _silence(0.4)]).astype(np.float32)
    m = measure_prosody(y, SR, cfg.prosody)
    assert m.duration_s == pytest.approx(3.0)
    # 1.5 s of voice; the 0.6 s pause is longer than min_pause_s and does not count. The energy
    # window smears each of the four on/offsets by up to ~60 ms.
    assert 1.5 <= m.speech_duration_s <= 1.75
    short_gap = np.concatenate([_voice(150, 0.8), _silence(0.15), _voice(150, 0.7)]).astype(np.float32)
    assert 1.65 <= measure_prosody(short_gap, SR, cfg.prosody).speech_duration_s <= 1.8  # 0.15 s gap bridged


@pytest.mark.parametrize("n", [4, 7, 10])
def test_syllable_nuclei_counted_on_amplitude_bursts(cfg, n):
    m = measure_prosody(np.concatenate([_silence(0.3), _syllables(n), _silence(0.3)]), SR, cfg.prosody)
    assert m.n_syllables == n
    assert m.articulation_rate_sps == pytest.approx(n / m.speech_duration_s)
    assert m.speech_rate_sps == pytest.approx(n / m.duration_s)
    assert m.speech_rate_sps < m.articulation_rate_sps


def test_faster_bursts_give_a_higher_articulation_rate(cfg):
    slow = measure_prosody(_syllables(6, rate_hz=3.0), SR, cfg.prosody)
    fast = measure_prosody(_syllables(6, rate_hz=6.0), SR, cfg.prosody)
    assert fast.articulation_rate_sps > 1.5 * slow.articulation_rate_sps


def test_fricative_like_noise_peaks_are_not_nuclei(cfg):
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    hiss = np.diff(rng.standard_normal(t.size + 1))  # high-passed noise: energy above 3 kHz, like /s/
    y = (0.2 * hiss * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t))).astype(np.float32)
    for check in ("sonority", "voicing"):
        assert measure_prosody(y, SR, cfg.prosody.model_copy(update={"nucleus_check": check})).n_syllables == 0


def test_silence_padding_changes_no_level_measure_on_synthetic_speech(cfg):
    y = np.concatenate([_syllables(6), _voice(180, 0.5).astype(np.float32)])
    a = measure_prosody(y, SR, cfg.prosody)
    b = measure_prosody(np.concatenate([_silence(1.0), y, _silence(1.0)]), SR, cfg.prosody)
    assert b.duration_s == pytest.approx(a.duration_s + 2.0)
    assert b.rms_dbfs == pytest.approx(a.rms_dbfs, abs=0.05)
    assert b.voiced_fraction == pytest.approx(a.voiced_fraction, abs=0.02)
    assert b.f0_median_hz == pytest.approx(a.f0_median_hz, rel=0.005)
    assert (b.n_syllables, b.speech_duration_s) == (a.n_syllables, a.speech_duration_s)
    assert b.intonation.pattern == a.intonation.pattern


def test_record_is_json_able_without_arrays(cfg):
    m = measure_prosody(_syllables(5), SR, cfg.prosody)
    rec = m.to_record()
    json.dumps(rec)
    assert not any(isinstance(v, (list, np.ndarray)) for v in rec.values())
    assert {"f0_median_hz", "f0_median_st", "f0_range_st", "rms_dbfs", "voiced_fraction", "speech_rate_sps",
            "articulation_rate_sps", "duration_s", "speech_duration_s", "intonation_style", "intonation_pattern"} <= rec.keys()
    assert m.f0_times.shape == m.f0_hz.shape and m.energy_times.shape == m.energy_dbfs.shape == m.speech_mask.shape


def test_unvoiced_clip_keeps_pitch_missing(cfg):
    rng = np.random.default_rng(1)
    m = measure_prosody((0.1 * rng.standard_normal(SR)).astype(np.float32), SR, cfg.prosody)
    rec = m.to_record()
    assert rec["f0_median_hz"] is None and rec["f0_range_st"] is None and rec["rms_dbfs"] is not None


# --- real speech (RAVDESS actors 01-02) ------------------------------------------------


def _ravdess_fields(path: Path) -> list[str]:
    return path.stem.split("-")  # modality, channel, emotion, intensity, statement, repetition, actor


@pytest.fixture(scope="module")
def ravdess():
    """Measures of every RAVDESS clip present (about 2 s of CPU for 120 clips)."""
    from emotionthinker.config import load_config

    p = load_config("test", environ={}).prosody
    paths = sorted(RAVDESS_DIR.glob("Actor_*/03-01-*.wav"))
    audio = {f: load_audio(f) for f in paths}
    return p, audio, {f: measure_prosody(y, SR, p) for f, y in audio.items()}


def _gender(path: Path) -> str:
    return "male" if int(_ravdess_fields(path)[6]) % 2 else "female"


@requires_ravdess
def test_ravdess_padding_with_silence_changes_no_level_and_no_pattern(ravdess):
    p, audio, measures = ravdess
    cal = fit_calibration([("ravdess", _gender(f), m) for f, m in measures.items()], p)
    sample = list(measures)[::5]  # 24 clips over both actors and all emotions
    # 1 s both ends, and an uneven amount that is no multiple of the 10 ms frame step
    for before, after in ((1.0, 1.0), (0.3371, 1.0129)):
        for f in sample:
            padded = measure_prosody(np.concatenate([_silence(before), audio[f], _silence(after)]), SR, p)
            ref = measures[f]
            assert assign_levels(padded, "ravdess", _gender(f), cal) == assign_levels(ref, "ravdess", _gender(f), cal), f.name
            assert (padded.intonation.pattern, padded.intonation.label) == (ref.intonation.pattern, ref.intonation.label), f.name
            assert padded.rms_dbfs == pytest.approx(ref.rms_dbfs, abs=0.01)
            assert padded.n_syllables == ref.n_syllables and padded.speech_duration_s == ref.speech_duration_s
            assert padded.speech_rate_sps < ref.speech_rate_sps  # whole-clip rate does see the silence


@requires_ravdess
def test_ravdess_strong_intensity_is_louder_than_normal(ravdess):
    _, _, measures = ravdess
    by_name = {f.name: m for f, m in measures.items()}
    wins = pairs = 0
    for f, m in measures.items():
        fields = _ravdess_fields(f)
        if fields[3] != "02":
            continue
        normal = by_name.get("-".join(fields[:3] + ["01"] + fields[4:]) + ".wav")
        if normal is not None:
            pairs += 1
            wins += m.rms_dbfs > normal.rms_dbfs
    assert pairs >= 20
    print(f"strong > normal rms_dbfs in {wins}/{pairs} pairs ({wins / pairs:.0%})")
    assert wins / pairs >= 0.75


@requires_ravdess
def test_ravdess_syllable_count_matches_the_seven_syllable_statements(ravdess):
    # "Kids are talking by the door" / "Dogs are sitting by the door": 7 syllables each
    _, _, measures = ravdess
    counts = np.array([m.n_syllables for m in measures.values()])
    mae = float(np.abs(counts - 7).mean())
    print(f"syllable count MAE {mae:.2f} over {counts.size} clips, within +-1: {(np.abs(counts - 7) <= 1).mean():.0%}")
    assert mae < 1.0 and (np.abs(counts - 7) <= 1).mean() >= 0.8


@requires_ravdess
def test_ravdess_pitch_separates_the_male_and_female_actor(ravdess):
    _, _, measures = ravdess
    male = [m.f0_median_hz for f, m in measures.items() if _gender(f) == "male"]
    female = [m.f0_median_hz for f, m in measures.items() if _gender(f) == "female"]
    assert 85 < np.median(male) < 180 and 165 < np.median(female) < 300
    assert np.median(female) > 1.5 * np.median(male)
