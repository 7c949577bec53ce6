"""Intonation: style from the span, pattern from the smoothed shape, weak evidence -> uncertain."""

from __future__ import annotations

import numpy as np
import pytest

from emotionthinker.prosody.intonation import RELEASED_INTONATION, classify_intonation, released_intonation
from emotionthinker.prosody.measures import measure_prosody

SR = 16000
HOP = 0.01


def _frames(st: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame times and F0 in Hz for a semitone contour (re 100 Hz)."""
    return np.arange(st.size) * HOP + 0.05, 100.0 * 2 ** (np.asarray(st) / 12.0)


def _u(n: int = 150) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


@pytest.mark.parametrize(
    ("contour", "pattern"),
    [
        (6.0 * _u(), "rising"),
        (6.0 - 6.0 * _u(), "falling"),
        (6.0 * np.sin(np.pi * _u()), "rising-falling"),
        (-6.0 * np.sin(np.pi * _u()), "falling-rising"),
        (3.0 + 0.4 * np.sin(2 * np.pi * 3 * _u()), "level"),
    ],
)
def test_clean_shapes(cfg, contour, pattern):
    r = classify_intonation(*_frames(contour), cfg.prosody)
    assert r.pattern == pattern, r.to_dict()
    if pattern != "level":
        assert r.label == pattern and r.r2 > 0.9


def test_flat_and_expressive_styles(cfg):
    flat = classify_intonation(*_frames(5.0 + 0.3 * np.sin(2 * np.pi * 4 * _u())), cfg.prosody)
    assert (flat.style, flat.pattern, flat.label) == ("flat", "level", "flat")
    # big excursions, no global movement (one cycle per quarter): expressive but no shape to claim
    wild = classify_intonation(*_frames(7.0 * np.sin(2 * np.pi * 4 * _u(200))), cfg.prosody)
    assert (wild.style, wild.pattern, wild.label) == ("expressive", "level", "expressive")
    moderate = classify_intonation(*_frames(3.0 * np.sin(2 * np.pi * 4 * _u(200))), cfg.prosody)
    assert moderate.style == "moderate" and moderate.pattern == "level"
    assert moderate.label == cfg.prosody.level_moderate_label == "uncertain"


def test_weak_fit_is_uncertain_not_a_guess(cfg):
    # a 3 st rise buried under 5 st oscillations: ends differ by > direction_st, but the fit explains little
    st = 3.0 * _u(200) + 5.0 * np.sin(2 * np.pi * 4 * _u(200))
    r = classify_intonation(*_frames(st), cfg.prosody)
    assert abs(r.delta_st) >= cfg.prosody.direction_st and r.r2 < cfg.prosody.min_fit_r2
    assert r.pattern == "uncertain" and r.label == "uncertain"


def test_voicing_bunched_in_one_spot_is_too_short(cfg):
    times, f0 = _frames(np.linspace(0, 8, 25))  # enough frames, but only 0.24 s of contour
    r = classify_intonation(times, f0, cfg.prosody)
    assert r.n_voiced == 25 and r.pattern == "too_short"


def test_scattered_voicing_is_uncertain(cfg):
    times, f0 = _frames(np.linspace(0, 8, 300))  # a clean 8 st rise over 3 s ...
    keep = np.zeros(300, bool)
    keep[::10] = True  # ... of which only every 10th frame is voiced
    f0[~keep] = np.nan
    assert classify_intonation(times, f0, cfg.prosody).pattern == "uncertain"


def test_too_few_voiced_frames_is_too_short(cfg):
    """Voicing spread over more than min_voiced_span_s (every 2nd frame of a rise) with one frame too few:
    only the frame-count rule can call it too_short; one frame more is a rise."""
    p = cfg.prosody
    for n, expected in ((p.min_voiced_frames - 1, "too_short"), (p.min_voiced_frames, "rising")):
        times, f0 = _frames(np.linspace(0, 8, 2 * n))
        f0[1::2] = np.nan
        assert times[2 * n - 2] - times[0] > p.min_voiced_span_s  # the span rule does not apply
        r = classify_intonation(times, f0, p)
        assert r.pattern == expected, (n, r)
    assert r.label != "too_short"
    times, f0 = _frames(np.linspace(0, 8, 200))
    f0[p.min_voiced_frames - 1 :] = np.nan
    r = classify_intonation(times, f0, p)
    assert (r.pattern, r.label) == ("too_short", "too_short")
    assert classify_intonation(np.arange(5) * HOP, np.full(5, np.nan), cfg.prosody).pattern == "too_short"


def test_unvoiced_gaps_and_octave_spikes_do_not_break_the_shape(cfg):
    times, f0 = _frames(8.0 * _u(200))
    f0[40:70] = np.nan  # a voiceless stretch
    f0[[100, 130, 160]] *= 2.0  # isolated octave errors: the median filter removes them
    r = classify_intonation(times, f0, cfg.prosody)
    assert r.pattern == "rising" and r.span_st < 9.0


def test_released_mapping(cfg):
    p = cfg.prosody
    for shape in ("rising", "falling", "rising-falling", "falling-rising"):
        for style in ("flat", "moderate", "expressive"):
            assert released_intonation(style, shape, p) == shape
    assert released_intonation("expressive", "uncertain", p) == "uncertain"
    assert released_intonation("flat", "too_short", p) == "too_short"
    assert released_intonation("flat", "level", p) == "flat"
    assert released_intonation("expressive", "level", p) == "expressive"
    assert released_intonation("moderate", "level", p) == "uncertain"
    assert released_intonation("moderate", "level", p.model_copy(update={"level_moderate_label": "flat"})) == "flat"
    assert {released_intonation(s, q, p) for s in ("flat", "moderate", "expressive") for q in ("rising", "level", "uncertain")} <= set(RELEASED_INTONATION)


# --- end to end from audio -------------------------------------------------------------


def _voice(f0_hz: np.ndarray) -> np.ndarray:
    """Harmonic complex (10 partials, 1/k spectrum) following f0_hz sample by sample."""
    phase = 2 * np.pi * np.cumsum(f0_hz) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 11))
    ramp = np.minimum(1.0, np.minimum(np.arange(y.size), np.arange(y.size)[::-1]) / (0.02 * SR))
    return (0.3 * y * ramp / np.max(np.abs(y))).astype(np.float32)


def _glide(start_hz: float, end_hz: float, dur: float = 1.5) -> np.ndarray:
    return _voice(np.geomspace(start_hz, end_hz, int(dur * SR)))


def _pad(y: np.ndarray, seconds: float = 0.3) -> np.ndarray:
    z = np.zeros(int(seconds * SR), dtype=np.float32)
    return np.concatenate([z, y, z])


@pytest.mark.parametrize(
    ("signal", "label"),
    [
        (lambda: _glide(120, 200), "rising"),
        (lambda: _glide(240, 140), "falling"),
        (lambda: _voice(180 * 2 ** (5 * np.sin(np.pi * np.linspace(0, 1, 24000)) / 12)), "rising-falling"),
        (lambda: _glide(150, 150), "flat"),
    ],
    ids=["rising", "falling", "rising-falling", "flat"],
)
def test_synthetic_glides_from_audio(cfg, signal, label):
    m = measure_prosody(_pad(signal()), SR, cfg.prosody)
    assert m.intonation.label == label, m.intonation.to_dict()


def test_short_voiced_blip_is_too_short(cfg):
    y = np.concatenate([np.zeros(SR // 2, np.float32), _glide(150, 170, 0.2), np.zeros(SR // 2, np.float32)])
    m = measure_prosody(y, SR, cfg.prosody)
    assert m.intonation.pattern == "too_short" and m.intonation.label == "too_short"
    assert 0 < m.intonation.n_voiced <= 25  # the blip itself is tracked, it is just too short
