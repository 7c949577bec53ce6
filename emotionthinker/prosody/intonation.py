"""Intonation contour: style from the F0 span, pattern from the smoothed shape.

The contour is the voiced F0 in semitones (re 100 Hz) in frame order, cleaned
with a median filter (removes isolated octave errors) then Savitzky-Golay
smoothing (keeps the shape, drops micro-prosody). Evidence used:
- span: 5th-95th percentile of the smoothed contour -> style flat/moderate/expressive;
- direction: mean of the last quarter minus the first quarter of voiced frames;
- turning point: vertex of a quadratic fit over (normalised) time, with its
  depth below/above both ends;
- fit quality: R^2 of the quadratic, and how densely voiced frames cover the
  stretch between the first and the last of them.
A shape is only claimed when the evidence supports it; otherwise 'uncertain'.
'too_short': fewer than min_voiced_frames voiced frames, or voiced frames
spanning less than min_voiced_span_s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import medfilt, savgol_filter

from emotionthinker.config import ProsodyConfig

STYLES = ("flat", "moderate", "expressive")
PATTERNS = ("rising", "falling", "rising-falling", "falling-rising", "level", "uncertain", "too_short")
SHAPES = ("rising", "falling", "rising-falling", "falling-rising")
# Values of the released single `intonation` annotation field.
RELEASED_INTONATION = ("rising", "falling", "rising-falling", "falling-rising", "flat", "expressive", "uncertain", "too_short")


@dataclass(frozen=True)
class IntonationResult:
    style: str
    pattern: str
    label: str  # released `intonation` value
    span_st: float
    delta_st: float  # last quarter minus first quarter
    turn_depth_st: float  # 0 when the quadratic has no interior vertex
    r2: float
    n_voiced: int
    times: np.ndarray = field(repr=False)  # voiced frame times
    contour_st: np.ndarray = field(repr=False)  # smoothed contour at those times

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "style": self.style,
            "pattern": self.pattern,
            "label": self.label,
            "span_st": _json_float(self.span_st),
            "delta_st": _json_float(self.delta_st),
            "turn_depth_st": _json_float(self.turn_depth_st),
            "r2": _json_float(self.r2),
            "n_voiced": self.n_voiced,
        }


def _json_float(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def smooth_contour(st: np.ndarray, cfg: ProsodyConfig) -> np.ndarray:
    """Median filter then Savitzky-Golay over the voiced-frame sequence."""
    st = np.asarray(st, dtype=np.float64)
    if st.size == 0:
        return st
    k = min(_odd(cfg.median_window), st.size if st.size % 2 else st.size - 1)
    out = medfilt(st, k) if k >= 3 else st.copy()
    if k >= 3:  # medfilt zero-pads: keep the original values at the edges it cannot see
        half = k // 2
        out[:half], out[-half:] = st[:half], st[-half:]
    w = min(_odd(cfg.smooth_window), out.size if out.size % 2 else out.size - 1)
    if w > cfg.smooth_order:
        out = savgol_filter(out, w, cfg.smooth_order, mode="interp")
    return out


def style_from_span(span_st: float, cfg: ProsodyConfig) -> str:
    if not np.isfinite(span_st) or span_st < cfg.flat_span_st:
        return "flat"
    return "expressive" if span_st > cfg.expressive_span_st else "moderate"


def released_intonation(style: str, pattern: str, cfg: ProsodyConfig) -> str:
    """Map (style, pattern) to the released single field.

    A shape wins; 'uncertain'/'too_short' pass through; a level contour is
    described by its style. 'moderate' + 'level' has no released value: the
    contour moves 3-9 st without a global shape, so calling it flat would be a
    false claim and 'expressive' an exaggeration. By default it becomes
    'uncertain' (the CoT writer then ignores the contour);
    cfg.level_moderate_label='flat' restores the looser reading.
    """
    if pattern in SHAPES or pattern in ("uncertain", "too_short"):
        return pattern
    if style in ("flat", "expressive"):
        return style
    return cfg.level_moderate_label


def _quadratic_evidence(u: np.ndarray, s: np.ndarray, cfg: ProsodyConfig) -> tuple[float, str | None, float, float]:
    """R^2 of a quadratic fit, the turn it implies (if deep and interior), its depth, linear slope."""
    a, b, c = np.polyfit(u, s, 2)
    fitted = (a * u + b) * u + c
    sst = float(np.sum((s - s.mean()) ** 2))
    r2 = 1.0 - float(np.sum((s - fitted) ** 2)) / sst if sst > 1e-9 else 1.0
    slope = float(np.polyfit(u, s, 1)[0])
    turn, depth = None, 0.0
    if abs(a) > 1e-9:
        v = -b / (2 * a)
        if cfg.turn_margin <= v <= 1 - cfg.turn_margin:
            at = lambda x: (a * x + b) * x + c  # noqa: E731
            depth = float(min(abs(at(v) - at(0.0)), abs(at(v) - at(1.0))))
            if depth >= cfg.turn_depth_st:
                turn = "rising-falling" if a < 0 else "falling-rising"
    return r2, turn, depth, slope


def classify_intonation(times: np.ndarray, f0_hz: np.ndarray, cfg: ProsodyConfig) -> IntonationResult:
    """Style and pattern of one clip from its frame-level F0 (NaN or <= 0 where unvoiced)."""
    times = np.asarray(times, dtype=np.float64)
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    voiced = np.isfinite(f0_hz) & (f0_hz > 0)
    t = times[voiced]
    st = 12.0 * np.log2(f0_hz[voiced] / 100.0)
    n = int(st.size)
    s = smooth_contour(st, cfg)
    span = float(np.subtract(*np.percentile(s, [95, 5]))) if n >= 2 else float("nan")
    style = style_from_span(span, cfg)

    def result(pattern: str, delta: float = float("nan"), depth: float = 0.0, r2: float = float("nan")) -> IntonationResult:
        return IntonationResult(style, pattern, released_intonation(style, pattern, cfg), span, delta, depth, r2, n, t, s)

    extent = float(t[-1] - t[0]) if n else 0.0
    if n < cfg.min_voiced_frames or extent < cfg.min_voiced_span_s:
        return result("too_short")  # too little voiced time to carry a contour
    q = max(1, n // 4)
    delta = float(s[-q:].mean() - s[:q].mean())
    step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    if n * step < cfg.min_voiced_coverage * extent:
        return result("uncertain", delta)  # a few voiced frames scattered over a long stretch
    u = (t - t[0]) / extent
    r2, turn, depth, slope = _quadratic_evidence(u, s, cfg)
    if turn is not None:
        return result(turn if r2 >= cfg.min_fit_r2 else "uncertain", delta, depth, r2)
    if abs(delta) >= cfg.direction_st:
        agrees = np.sign(slope) == np.sign(delta)
        if not agrees or r2 < cfg.min_fit_r2:
            return result("uncertain", delta, depth, r2)  # ends disagree with the trend, or noise dominates
        return result("rising" if delta > 0 else "falling", delta, depth, r2)
    return result("level", delta, depth, r2)
