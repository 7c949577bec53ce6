"""Clips with a known F0 contour, for intonation tests.

espeak-ng renders a near-monotone sentence (SSML range x-low); Praat's
Manipulation (through parselmouth) then replaces its pitch tier with a
piecewise-linear contour and resynthesises it by overlap-add. The contour over
the voiced stretch is therefore exactly known: rising, falling, rising-falling,
falling-rising or flat, with a designed span in semitones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import parselmouth
from parselmouth.praat import call

from emotionthinker.config import DemoConfig
from emotionthinker.demo.design import voice_split
from emotionthinker.demo.sentences import SENTENCES

# Pattern names are the released EmotionCoT intonation values.
GLIDE_PATTERNS = ("rising", "falling", "rising-falling", "falling-rising", "flat")
# Relative F0 (in units of half the span, around the clip's own median) at evenly spaced
# breakpoints over the voiced stretch.
_SHAPES: dict[str, tuple[float, ...]] = {
    "rising": (-1.0, 1.0),
    "falling": (1.0, -1.0),
    "rising-falling": (-1.0, 1.0, -1.0),
    "falling-rising": (1.0, -1.0, 1.0),
    "flat": (0.0, 0.0),
}
SPAN_ST_RANGE = (6.0, 10.0)  # well beyond any sensible direction/turn threshold, below an octave
GLIDE_PITCH, GLIDE_SPEED, GLIDE_AMPLITUDE, GLIDE_RANGE = 50, 150, 32.0, "x-low"
# Praat analysis range for the manipulation's pulses, by gender.
_ANALYSIS_RANGE = {"male": (50.0, 300.0), "female": (100.0, 500.0), "unknown": (50.0, 500.0)}


@dataclass(frozen=True)
class GlidePlan:
    index: int
    design_intonation: str
    speaker: str
    voice: str
    gender: str
    split: str
    transcription: str
    span_st: float
    pitch: int = GLIDE_PITCH
    speed: int = GLIDE_SPEED
    amplitude_nominal: float = GLIDE_AMPLITUDE
    pitch_range: str = GLIDE_RANGE


def plan_glides(cfg: DemoConfig, genders: dict[str, str]) -> list[GlidePlan]:
    """cfg.glides_per_pattern clips per pattern, voices and neutral sentences in rotation."""
    rng = np.random.default_rng([cfg.seed, 2])
    neutral = SENTENCES["neutral"]
    plans = []
    for rep in range(cfg.glides_per_pattern):
        for k, pattern in enumerate(GLIDE_PATTERNS):
            index = rep * len(GLIDE_PATTERNS) + k
            voice = cfg.voices[index % len(cfg.voices)]
            span = round(float(rng.uniform(*SPAN_ST_RANGE)), 2)  # drawn for every glide: stable sequence
            plans.append(GlidePlan(
                index=index,
                design_intonation=pattern,
                speaker=voice,
                voice=voice,
                gender=genders[voice],
                split=voice_split(voice, cfg),
                transcription=neutral[index % len(neutral)],
                span_st=0.0 if pattern == "flat" else span,
            ))
    return plans


def voiced_span(y: np.ndarray, sr: int, gender: str) -> tuple[float, float, float]:
    """(first voiced time, last voiced time, median F0 in Hz) of a clip."""
    floor, ceiling = _ANALYSIS_RANGE.get(gender, _ANALYSIS_RANGE["unknown"])
    pitch = parselmouth.Sound(y.astype(np.float64), sampling_frequency=sr).to_pitch_ac(
        time_step=0.01, pitch_floor=floor, pitch_ceiling=ceiling)
    f0 = pitch.selected_array["frequency"]
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size < 2:
        raise ValueError("source clip has no voiced stretch to impose a contour on")
    times = pitch.xs()
    return float(times[voiced[0]]), float(times[voiced[-1]]), float(np.median(f0[voiced]))


def contour_points(pattern: str, t0: float, t1: float, center_hz: float, span_st: float) -> list[tuple[float, float]]:
    """Breakpoints (time s, F0 Hz) of the designed contour; Praat holds the end values outside [t0, t1]."""
    shape = _SHAPES[pattern]
    times = np.linspace(t0, t1, len(shape))
    return [(round(float(t), 4), round(float(center_hz * 2 ** (s * span_st / 2 / 12)), 2)) for t, s in zip(times, shape)]


def impose_contour(y: np.ndarray, sr: int, points: list[tuple[float, float]], gender: str) -> np.ndarray:
    """Resynthesise ``y`` with its F0 replaced by the piecewise-linear ``points`` (Praat PSOLA)."""
    floor, ceiling = _ANALYSIS_RANGE.get(gender, _ANALYSIS_RANGE["unknown"])
    sound = parselmouth.Sound(y.astype(np.float64), sampling_frequency=sr)
    manipulation = call(sound, "To Manipulation", 0.01, floor, ceiling)
    tier = call("Create PitchTier", "glide", sound.xmin, sound.xmax)
    for t, hz in points:
        call(tier, "Add point", t, hz)
    call([tier, manipulation], "Replace pitch tier")
    out = call(manipulation, "Get resynthesis (overlap-add)")
    return np.asarray(out.values[0], dtype=np.float32)
