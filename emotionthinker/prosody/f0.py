"""F0 tracking with Praat's autocorrelation method (praat-parselmouth).

A single wide floor..ceiling range invites octave errors (creak read as a
sub-octave, strong second harmonics as an octave up). Following De Looze &
Hirst, a cheap first pass over the configured range estimates the speaker's
quartiles and a second pass tracks within [0.75 * q25, k * q75]. Praat's
octave-jump cost in the Viterbi path and, optionally, its 'Kill octave jumps'
are the remaining guards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import parselmouth

from emotionthinker.config import ProsodyConfig

ST_REFERENCE_HZ = 100.0
# Pass-1 statistics need a handful of voiced frames to mean anything.
_MIN_FRAMES_FOR_RANGE = 10
# The second-pass range never gets narrower than this (ceiling / floor).
_MIN_RANGE_RATIO = 2.0
# Praat needs a few pitch periods of signal for one analysis window.
MIN_SIGNAL_S = 0.15
# Analysis span (see analysis_span): content within ANCHOR_DB of the peak, plus EDGE_PAD_S either side.
ANCHOR_DB = 45.0
EDGE_PAD_S = 0.15


class ProsodyInputError(ValueError):
    """The signal cannot be analysed; ``reason`` is a short code for quarantine records."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class F0Track:
    times: np.ndarray  # frame centres, seconds from the start of the signal
    f0_hz: np.ndarray  # NaN where unvoiced
    floor_hz: float  # range of the final pass
    ceiling_hz: float

    @property
    def voiced(self) -> np.ndarray:
        return np.isfinite(self.f0_hz)


def to_semitones(f0_hz: np.ndarray | float, ref_hz: float = ST_REFERENCE_HZ) -> np.ndarray | float:
    return 12.0 * np.log2(np.asarray(f0_hz, dtype=np.float64) / ref_hz)


def check_signal(y: np.ndarray, sr: int) -> np.ndarray:
    """Return a float64 1-D copy-free view of y or raise ProsodyInputError."""
    if sr <= 0:
        raise ProsodyInputError("bad_sample_rate", f"sample rate {sr} must be positive")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ProsodyInputError("not_mono", f"expected a 1-D mono signal, got shape {y.shape}")
    if y.size < MIN_SIGNAL_S * sr:
        raise ProsodyInputError("too_short", f"{y.size / sr:.3f} s is below {MIN_SIGNAL_S} s")
    y = y.astype(np.float64, copy=False)
    if not np.isfinite(y).all():
        raise ProsodyInputError("non_finite_samples", "signal holds NaN or Inf samples")
    return y


def analysis_span(y: np.ndarray, sr: int) -> tuple[int, int]:
    """Sample range [start, stop) that is analysed: the content plus EDGE_PAD_S either side.

    The span is anchored on the signal itself (first/last sample within
    ANCHOR_DB of the peak), not on the clip's edges, so the analysis frames sit
    at the same places relative to the speech however much silence surrounds
    it: silence padding of any length changes nothing but duration_s. It also
    skips long leading/trailing silence (less work), and extends past the clip
    edges with zeros, so a clip cut mid-vowel (a corpus cut to a fixed length)
    keeps its edge frames, which Praat would otherwise drop.
    """
    magnitude = np.abs(y)
    peak = float(magnitude.max())
    if peak <= 0:
        return 0, y.size
    loud = np.flatnonzero(magnitude >= peak * 10 ** (-ANCHOR_DB / 20))
    pad = int(round(EDGE_PAD_S * sr))
    return int(loud[0]) - pad, int(loud[-1]) + 1 + pad


def analysis_sound(y: np.ndarray, sr: int) -> parselmouth.Sound:
    """The analysed span of y as a Sound whose time axis is the clip's (0 at y[0]); zeros outside y."""
    y = check_signal(y, sr)
    start, stop = analysis_span(y, sr)
    segment = np.zeros(stop - start)
    lo, hi = max(start, 0), min(stop, y.size)
    segment[lo - start : hi - start] = y[lo:hi]
    return parselmouth.Sound(segment, sampling_frequency=float(sr), start_time=start / sr)


def _pitch(sound: parselmouth.Sound, hop_s: float, floor: float, ceiling: float, cfg: ProsodyConfig) -> parselmouth.Pitch:
    return sound.to_pitch_ac(
        time_step=hop_s,
        pitch_floor=floor,
        pitch_ceiling=ceiling,
        max_number_of_candidates=cfg.max_candidates,
        silence_threshold=cfg.silence_threshold,
        voicing_threshold=cfg.voicing_threshold,
        octave_jump_cost=cfg.octave_jump_cost,
    )


def _frequencies(pitch: parselmouth.Pitch) -> np.ndarray:
    f0 = pitch.selected_array["frequency"].astype(np.float64)
    f0[f0 <= 0] = np.nan
    return f0


def second_pass_range(f0_hz: np.ndarray, cfg: ProsodyConfig) -> tuple[float, float]:
    """Speaker-adapted floor/ceiling from pass-1 quartiles, clamped to the configured range."""
    voiced = f0_hz[np.isfinite(f0_hz)]
    if voiced.size < _MIN_FRAMES_FOR_RANGE:
        return cfg.f0_floor_hz, cfg.f0_ceiling_hz
    q25, q75 = np.quantile(voiced, [0.25, 0.75])
    floor = max(cfg.f0_floor_hz, cfg.two_pass_floor_factor * q25)
    ceiling = min(cfg.f0_ceiling_hz, cfg.two_pass_ceiling_factor * q75)
    if ceiling < _MIN_RANGE_RATIO * floor:  # degenerate quartiles (a steady tone): widen around them
        floor = max(cfg.f0_floor_hz, min(floor, ceiling / _MIN_RANGE_RATIO))
        ceiling = min(cfg.f0_ceiling_hz, max(ceiling, floor * _MIN_RANGE_RATIO))
    # Whole Hz, outwards: Praat's pass-1 values carry ~1e-5 numerical noise (e.g. with silence padding),
    # and an unrounded floor would pass it on as a different window length in pass 2.
    floor = max(cfg.f0_floor_hz, float(np.floor(floor)))
    ceiling = min(cfg.f0_ceiling_hz, float(np.ceil(ceiling)))
    return float(floor), float(ceiling)


def track_f0_sound(sound: parselmouth.Sound, cfg: ProsodyConfig) -> F0Track:
    floor, ceiling = cfg.f0_floor_hz, cfg.f0_ceiling_hz
    if cfg.two_pass:
        first = _frequencies(_pitch(sound, cfg.first_pass_hop_s, floor, ceiling, cfg))
        floor, ceiling = second_pass_range(first, cfg)
    pitch = _pitch(sound, cfg.hop_s, floor, ceiling, cfg)
    if cfg.kill_octave_jumps:
        pitch = pitch.kill_octave_jumps()
    # Frame times are on the Sound's own time axis: 0 at the first sample of the clip.
    return F0Track(np.asarray(pitch.xs(), dtype=np.float64), _frequencies(pitch), floor, ceiling)


def track_f0(y: np.ndarray, sr: int, cfg: ProsodyConfig) -> F0Track:
    """F0 every cfg.hop_s seconds (NaN where unvoiced)."""
    return track_f0_sound(analysis_sound(y, sr), cfg)
