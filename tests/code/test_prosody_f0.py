"""F0 tracking (Praat autocorrelation, two-pass range) on signals with known F0."""

from __future__ import annotations

import numpy as np
import pytest

from emotionthinker.prosody.f0 import ProsodyInputError, second_pass_range, to_semitones, track_f0
from emotionthinker.prosody.measures import measure_prosody

SR = 16000


def _voice(f0_hz: np.ndarray, partials: int = 10, rolloff: float = 1.0) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0_hz) / SR
    y = sum(np.sin(k * phase) / k**rolloff for k in range(1, partials + 1))
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def _tone(hz: float, dur: float = 1.5) -> np.ndarray:
    return _voice(np.full(int(dur * SR), hz))


@pytest.mark.parametrize("hz", [85.0, 120.0, 210.0, 330.0])
def test_median_f0_of_harmonic_tones_within_2_percent(cfg, hz):
    m = measure_prosody(_tone(hz), SR, cfg.prosody)
    assert m.f0_median_hz == pytest.approx(hz, rel=0.02)
    assert m.f0_median_st == pytest.approx(12 * np.log2(hz / 100), abs=0.35)
    assert m.f0_range_st < 0.5
    assert m.voiced_fraction > 0.9


def test_glide_track_follows_the_known_contour(cfg):
    truth = np.geomspace(110.0, 260.0, int(2.0 * SR))
    track = track_f0(_voice(truth), SR, cfg.prosody)
    inside = (track.times > 0.05) & (track.times < 1.95)  # the track also covers a margin of silence
    assert track.voiced[inside].mean() > 0.95 and not track.voiced[~((track.times > 0) & (track.times < 2.0))].any()
    v = track.voiced
    expected = np.interp(track.times[v], np.arange(truth.size) / SR, truth)
    assert np.median(np.abs(track.f0_hz[v] / expected - 1)) < 0.01
    assert np.abs(track.f0_hz[v] / expected - 1).max() < 0.05  # no octave jumps anywhere


def test_weak_fundamental_is_not_tracked_an_octave_up(cfg):
    # a 'missing fundamental'-like voice: partials 2-10 much stronger than the first
    phase = 2 * np.pi * np.cumsum(np.full(SR, 140.0)) / SR
    y = 0.05 * np.sin(phase) + sum(np.sin(k * phase) / k**0.5 for k in range(2, 11))
    m = measure_prosody((0.3 * y / np.abs(y).max()).astype(np.float32), SR, cfg.prosody)
    assert m.f0_median_hz == pytest.approx(140.0, rel=0.02)


def test_second_pass_range_adapts_to_the_speaker(cfg):
    p = cfg.prosody
    f0 = np.concatenate([np.full(50, 200.0), np.full(50, 240.0), [np.nan] * 10])
    floor, ceiling = second_pass_range(f0, p)
    assert floor == 150.0 and ceiling == min(p.f0_ceiling_hz, 2.0 * 240.0)
    f0[:50] = 201.3  # rounded outwards to whole Hz: 0.75 * 201.3 = 150.975 -> 150
    assert second_pass_range(f0, p)[0] == 150.0
    # too few voiced frames: keep the configured range
    assert second_pass_range(np.full(5, 200.0), p) == (p.f0_floor_hz, p.f0_ceiling_hz)
    # a steady tone still gets a usable (at least one octave) range
    floor, ceiling = second_pass_range(np.full(100, 100.0), p.model_copy(update={"two_pass_ceiling_factor": 1.1}))
    assert ceiling >= 2.0 * floor - 1e-9 and floor <= 100.0 <= ceiling


def test_single_pass_and_octave_jump_killing_are_configurable(cfg):
    y = _voice(np.geomspace(130.0, 190.0, SR))
    for update in ({"two_pass": False}, {"kill_octave_jumps": True}):
        m = measure_prosody(y, SR, cfg.prosody.model_copy(update=update))
        assert m.f0_median_hz == pytest.approx(np.sqrt(130.0 * 190.0), rel=0.03)
    single = track_f0(y, SR, cfg.prosody.model_copy(update={"two_pass": False}))
    assert (single.floor_hz, single.ceiling_hz) == (cfg.prosody.f0_floor_hz, cfg.prosody.f0_ceiling_hz)
    # A real jump of one octave (150 -> 300 Hz) is what 'Kill octave jumps' folds back: the flag must act.
    jump = _voice(np.concatenate([np.full(SR // 2, 150.0), np.full(SR // 2, 300.0)]))
    for kill, above_225 in ((False, 0.5), (True, 0.0)):
        track = track_f0(jump, SR, cfg.prosody.model_copy(update={"kill_octave_jumps": kill}))
        assert (track.f0_hz[track.voiced] > 225.0).mean() == pytest.approx(above_225, abs=0.05), kill


def test_unvoiced_noise_has_no_f0(cfg):
    rng = np.random.default_rng(0)
    m = measure_prosody((0.1 * rng.standard_normal(SR)).astype(np.float32), SR, cfg.prosody)
    assert m.voiced_fraction < 0.1
    assert m.intonation.pattern == "too_short"


def test_semitones_re_100_hz():
    assert to_semitones(100.0) == pytest.approx(0.0)
    assert to_semitones(200.0) == pytest.approx(12.0)
    assert to_semitones(50.0) == pytest.approx(-12.0)


@pytest.mark.parametrize(
    ("signal", "sr", "reason"),
    [
        (np.zeros((2, 16000), np.float32), SR, "not_mono"),
        (np.zeros(1000, np.float32), SR, "too_short"),
        (np.array([0.1, np.nan] * 8000, np.float32), SR, "non_finite_samples"),
        (np.zeros(16000, np.float32), 0, "bad_sample_rate"),
        (np.zeros(16000, np.float32), SR, "no_speech"),
    ],
)
def test_bad_input_raises_a_typed_error_with_reason(cfg, signal, sr, reason):
    with pytest.raises(ProsodyInputError) as err:
        measure_prosody(signal, sr, cfg.prosody)
    assert err.value.reason == reason
