"""Raw prosodic measures of one clip: F0 statistics, energy, voicing and rate.

Everything that feeds a level is measured over *speech frames* (energy within
cfg.speech_threshold_db of the clip's loudest frame and above an absolute
floor) on a frame grid anchored to the content (f0.analysis_span), so silence
around a clip changes nothing but duration_s and speech_rate_sps. F0 counts
only inside speech frames. Speech rate counts syllable nuclei as in de Jong &
Wempe (2009): intensity peaks above the speech threshold, standing out by a
minimum dip, and vowel-like (see syllable_nuclei). Praat computes the F0 and
intensity tracks; everything per frame after that is vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import parselmouth
from scipy.signal import find_peaks

from emotionthinker.config import ProsodyConfig
from emotionthinker.prosody.f0 import (
    ProsodyInputError,
    analysis_sound,
    check_signal,
    to_semitones,
    track_f0_sound,
)
from emotionthinker.prosody.intonation import IntonationResult, classify_intonation

# Praat intensity is dB re (2e-5)^2; a full-scale signal (mean square 1) reads 93.98 dB.
_PRAAT_DB_AT_FULL_SCALE = -10.0 * np.log10(4e-10)


@dataclass
class ProsodyMeasures:
    f0_median_hz: float  # NaN when nothing is voiced (e.g. whisper)
    f0_median_st: float  # re 100 Hz
    f0_range_st: float  # 5th-95th percentile of voiced F0
    rms_dbfs: float  # energy mean over speech frames, 0 dBFS = mean square 1
    voiced_fraction: float  # voiced share of speech frames
    speech_rate_sps: float  # syllable nuclei per second of the whole clip
    articulation_rate_sps: float  # syllable nuclei per second of speech
    duration_s: float
    speech_duration_s: float
    n_syllables: int
    intonation: IntonationResult
    f0_floor_hz: float  # range the final F0 pass used
    f0_ceiling_hz: float
    # Frame-level tracks for plots; never serialised into records.
    f0_times: np.ndarray = field(repr=False)
    f0_hz: np.ndarray = field(repr=False)
    energy_times: np.ndarray = field(repr=False)
    energy_dbfs: np.ndarray = field(repr=False)
    speech_mask: np.ndarray = field(repr=False)
    nuclei_times: np.ndarray = field(repr=False)

    def to_record(self) -> dict[str, Any]:
        """JSON-able scalars for the record's "prosody" field (NaN -> None; no arrays)."""

        def num(x: float, nd: int = 4) -> float | None:
            return round(float(x), nd) if np.isfinite(x) else None

        return {
            "f0_median_hz": num(self.f0_median_hz, 2),
            "f0_median_st": num(self.f0_median_st),
            "f0_range_st": num(self.f0_range_st),
            "rms_dbfs": num(self.rms_dbfs, 3),
            "voiced_fraction": num(self.voiced_fraction),
            "speech_rate_sps": num(self.speech_rate_sps),
            "articulation_rate_sps": num(self.articulation_rate_sps),
            "duration_s": num(self.duration_s),
            "speech_duration_s": num(self.speech_duration_s),
            "n_syllables": int(self.n_syllables),
            "intonation_style": self.intonation.style,
            "intonation_pattern": self.intonation.pattern,
        }


def _nearest_frames(src_times: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of the nearest frame of a uniform source grid for each query time.

    Grids of different trackers are often offset by exactly half a step; the
    small bias sends such ties to the later frame every time, instead of
    letting 1e-15 rounding noise (which changes with padding) decide.
    """
    if src_times.size < 2:
        return np.zeros(np.shape(query), dtype=np.int64)
    step = (src_times[-1] - src_times[0]) / (src_times.size - 1)
    idx = np.floor((np.asarray(query) - src_times[0]) / step + 0.5 + 1e-6).astype(np.int64)
    return np.clip(idx, 0, src_times.size - 1)


def _fill_short_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """Set False runs shorter than max_gap frames that lie between True frames to True."""
    if max_gap <= 0 or not mask.any():
        return mask
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    gap_lengths = starts[1:] - ends[:-1]
    out = mask.copy()
    for g0, g1 in zip(ends[:-1][gap_lengths < max_gap], starts[1:][gap_lengths < max_gap]):  # one per pause, not per frame
        out[g0:g1] = True
    return out


def speech_frames(energy_dbfs: np.ndarray, hop_s: float, cfg: ProsodyConfig) -> tuple[np.ndarray, float]:
    """Speech mask and the threshold used. Relative to the loudest frame, so padding cannot move it."""
    peak = float(np.max(energy_dbfs)) if energy_dbfs.size else -np.inf
    threshold = max(peak - cfg.speech_threshold_db, cfg.speech_floor_dbfs)
    mask = energy_dbfs > threshold
    return _fill_short_gaps(mask, int(round(cfg.min_pause_s / hop_s))), threshold


def intensity_track(sound: parselmouth.Sound, cfg: ProsodyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frame times and mean-square energy in dBFS (Praat's windowed intensity, DC removed)."""
    intensity = sound.to_intensity(minimum_pitch=cfg.intensity_min_pitch_hz, time_step=cfg.hop_s)
    db = intensity.values[0].astype(np.float64) - _PRAAT_DB_AT_FULL_SCALE
    return np.asarray(intensity.xs(), dtype=np.float64), db


def low_band_share(y: np.ndarray, sr: int, times: np.ndarray, max_hz: float, window_s: float = 0.04) -> np.ndarray:
    """Share of spectral energy below max_hz in a Hann window around each time (only a few peaks per clip)."""
    n = max(16, int(round(window_s * sr)))
    centres = np.rint(np.asarray(times) * sr).astype(np.int64)
    idx = np.clip(centres[:, None] + np.arange(-(n // 2), n - n // 2)[None, :], 0, y.size - 1)
    power = np.abs(np.fft.rfft(y[idx] * np.hanning(n), axis=1)) ** 2
    low = np.fft.rfftfreq(n, 1.0 / sr) < max_hz
    total = power.sum(axis=1)
    return np.divide(power[:, low].sum(axis=1), total, out=np.zeros_like(total), where=total > 0)


def syllable_nuclei(
    y: np.ndarray,
    sr: int,
    energy_times: np.ndarray,
    energy_dbfs: np.ndarray,
    threshold_dbfs: float,
    voiced_at: np.ndarray,
    cfg: ProsodyConfig,
) -> np.ndarray:
    """Times of intensity peaks above the speech threshold, prominent by the minimum dip, that are vowel-like.

    de Jong & Wempe keep a peak only where the pitch tracker says 'voiced'
    (cfg.nucleus_check='voicing'). The default 'sonority' check keeps a peak
    whose energy lies mostly below cfg.nucleus_max_hz instead: it rejects
    fricative peaks just as well (their energy sits above 3 kHz) and counts
    breathy, creaky or whispered vowels that a periodicity-based voicing
    decision drops, so the rate does not depend on the F0 tracker.
    """
    if energy_dbfs.size < 3:
        return np.empty(0)
    step = float(energy_times[1] - energy_times[0]) if energy_times.size > 1 else cfg.hop_s
    peaks, _ = find_peaks(
        energy_dbfs,
        height=threshold_dbfs,
        prominence=cfg.nucleus_min_dip_db,
        distance=max(1, int(round(cfg.nucleus_min_gap_s / step))),
    )
    if cfg.nucleus_check == "voicing":
        keep = voiced_at[peaks]
    else:
        keep = low_band_share(y, sr, energy_times[peaks], cfg.nucleus_max_hz) >= cfg.nucleus_min_low_share
    return energy_times[peaks[keep]]


def measures_from_f0(
    y: np.ndarray,
    sr: int,
    f0_times: np.ndarray,
    f0_hz: np.ndarray,
    cfg: ProsodyConfig,
    sound: parselmouth.Sound | None = None,
    f0_range: tuple[float, float] | None = None,
) -> ProsodyMeasures:
    """All measures given an F0 track from any tracker (Praat here, pYIN in the reference)."""
    y = check_signal(y, sr)
    sound = sound if sound is not None else analysis_sound(y, sr)
    f0_times = np.asarray(f0_times, dtype=np.float64)
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    voiced = np.isfinite(f0_hz) & (f0_hz > 0)
    duration = y.size / sr

    e_times, e_db = intensity_track(sound, cfg)
    mask, threshold = speech_frames(e_db, cfg.hop_s, cfg)
    if not mask.any():
        raise ProsodyInputError("no_speech", f"no frame above {threshold:.1f} dBFS")
    # F0 counts only inside speech: trackers without a silence gate (pYIN) voice hum and noise in pauses.
    if f0_times.size:
        voiced &= mask[_nearest_frames(e_times, f0_times)]
        f0_hz = np.where(voiced, f0_hz, np.nan)
    voiced_at = voiced[_nearest_frames(f0_times, e_times)] if f0_times.size else np.zeros(e_times.size, bool)
    speech_s = float(mask.sum()) * cfg.hop_s
    rms_dbfs = float(10.0 * np.log10(np.mean(10.0 ** (e_db[mask] / 10.0))))
    nuclei = syllable_nuclei(y, sr, e_times, e_db, threshold, voiced_at, cfg)

    f0v = f0_hz[voiced]
    if f0v.size:
        median_hz = float(np.median(f0v))
        p5, p95 = np.percentile(to_semitones(f0v), [5, 95])
        range_st = float(p95 - p5)
    else:
        median_hz, range_st = float("nan"), float("nan")
    floor, ceiling = f0_range if f0_range is not None else (cfg.f0_floor_hz, cfg.f0_ceiling_hz)
    return ProsodyMeasures(
        f0_median_hz=median_hz,
        f0_median_st=float(to_semitones(median_hz)) if f0v.size else float("nan"),
        f0_range_st=range_st,
        rms_dbfs=rms_dbfs,
        voiced_fraction=float(voiced_at[mask].mean()),
        speech_rate_sps=nuclei.size / duration,
        articulation_rate_sps=nuclei.size / speech_s,
        duration_s=duration,
        speech_duration_s=speech_s,
        n_syllables=int(nuclei.size),
        intonation=classify_intonation(f0_times, f0_hz, cfg),
        f0_floor_hz=float(floor),
        f0_ceiling_hz=float(ceiling),
        f0_times=f0_times,
        f0_hz=f0_hz,
        energy_times=e_times,
        energy_dbfs=e_db,
        speech_mask=mask,
        nuclei_times=nuclei,
    )


def measure_prosody(y: np.ndarray, sr: int, cfg: ProsodyConfig) -> ProsodyMeasures:
    """Measures of one mono clip (any rate; 16 kHz from emotionthinker.audio.load_audio).

    Raises ProsodyInputError (with .reason) for signals that cannot be analysed.
    """
    y = check_signal(y, sr)
    sound = analysis_sound(y, sr)
    track = track_f0_sound(sound, cfg)
    return measures_from_f0(y, sr, track.times, track.f0_hz, cfg, sound=sound, f0_range=(track.floor_hz, track.ceiling_hz))
