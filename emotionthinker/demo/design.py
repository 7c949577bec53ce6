"""The demo corpus design: which clip gets which class, voice, sentence and prosody levels.

The corpus is a prosody oracle, so the levels are designed, not sampled:

* Clips come in *units* of nine, one per class. A unit's nine (pitch, speed,
  energy) level cells form a 3x3 Latin square, so within a unit every level of
  every dimension occurs exactly three times and the dimensions are
  uncorrelated. Units alternate between the six 3x3 Latin squares
  (energy = pitch + m * speed + c mod 3), so every level triple occurs.
* A unit is spoken by three voices. The nine cells split into three
  transversals (three cells with all-different pitch, speed and energy); each
  voice speaks one, so *per voice* each level appears once per unit and a
  voice's base pitch or loudness never leans on one level.
* Classes take cells by a seeded assignment that favours their typical
  prosody (angry: fast and loud; sad: low, slow, soft) with enough noise that
  every class meets every level.
* A level sets an espeak-ng band (-p pitch, -s words per minute, -a amplitude)
  far apart from the next; the class nudges and a seeded jitter stay inside the
  band, so "high" is always above "normal" above "low" within a voice.

Everything here is a pure function of the configuration: same seed, same plan.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from scipy.optimize import linear_sum_assignment

from emotionthinker.config import DemoConfig
from emotionthinker.demo.espeak import split_voice
from emotionthinker.demo.sentences import SENTENCES
from emotionthinker.labels import LABELS

PITCH_LEVELS = ("low", "normal", "high")
SPEED_LEVELS = ("slow", "normal", "fast")
ENERGY_LEVELS = ("low", "normal", "high")

# Band centres per level. -p is espeak-ng's 0-99 pitch (about +-6 semitones between
# neighbours); -s words per minute (x1.43 between neighbours); -a amplitude at
# 0 dB loudness compensation (8 dB between neighbours, "high" stays clear of clipping).
PITCH_SETTING = (10, 50, 90)
SPEED_SETTING = (100, 160, 256)
AMPLITUDE_SETTING = (13.0, 32.0, 80.0)
# Class nudge (per unit of preference away from "normal") and seeded jitter, both
# well inside half the distance to the next band.
PITCH_NUDGE, PITCH_JITTER = 4, 3  # espeak -p units
SPEED_NUDGE, SPEED_JITTER = 0.04, 0.04  # relative
AMPLITUDE_NUDGE_DB, AMPLITUDE_JITTER_DB = 1.0, 0.5
WHISPER_PITCH = 50  # whispers have no F0: pitch is not a designed dimension for them
WHISPER_VARIANTS = {"male": "whisper", "female": "whisperf"}  # espeak-ng's whisper voice variants


@dataclass(frozen=True)
class ClassProsody:
    """Typical prosody of a class: preferred level index per dimension (None: no preference) and pitch range."""

    pitch: int | None
    speed: int
    energy: int
    pitch_range: str  # SSML <prosody range>: how far F0 moves around its base


CLASS_PROSODY: dict[str, ClassProsody] = {
    "neutral": ClassProsody(1, 1, 1, "medium"),
    "happy": ClassProsody(2, 1, 2, "high"),
    "sad": ClassProsody(0, 0, 0, "low"),
    "angry": ClassProsody(1, 2, 2, "high"),
    "contempt or disgust": ClassProsody(0, 0, 1, "low"),
    "confused": ClassProsody(1, 0, 1, "high"),
    "whisper": ClassProsody(None, 0, 0, "medium"),
    "surprise": ClassProsody(2, 2, 2, "high"),
    "fear": ClassProsody(2, 2, 0, "high"),
}
assert tuple(CLASS_PROSODY) == LABELS

# How strongly a class pulls towards its typical cell against seeded noise (Gumbel scale 1).
PREFERENCE_STRENGTH = 1.0


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip, and nothing that depends on the machine."""

    unit: int
    emotion: str
    speaker: str  # the configured voice: the speaker identity splits are made on
    voice: str  # the espeak-ng voice actually used (whisper swaps the variant)
    gender: str
    split: str
    transcription: str
    design_pitch_level: str | None  # None for whispers: no F0 to carry a level
    design_speed_level: str
    design_energy_level: str
    pitch: int
    speed: int
    amplitude_nominal: float  # before the voice's loudness compensation
    pitch_range: str

    @property
    def slug(self) -> str:
        return self.emotion.replace(" ", "_")


def ssml(text: str, pitch_range: str) -> str:
    """espeak-ng's CLI has no pitch-range flag; SSML <prosody range> sets it (rendered with -m)."""
    return f'<speak><prosody range="{pitch_range}">{escape(text)}</prosody></speak>'


def settings_hash(payload: dict[str, Any]) -> str:
    """Short content hash of the synthesis settings: a clip's file name changes iff its settings do."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def latin_square(unit: int) -> list[tuple[int, int, int]]:
    """The unit's nine (pitch, speed, energy) cells: energy = pitch + m*speed + c (mod 3)."""
    m = 1 + unit % 2
    c = (unit // 2) % 3
    return [(i, j, (i + m * j + c) % 3) for i in range(3) for j in range(3)]


def transversals(cells: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Split nine Latin-square cells into three triples, each with all-different levels in every dimension."""
    def ok(group: tuple[tuple[int, int, int], ...]) -> bool:
        return all(len({cell[d] for cell in group}) == 3 for d in range(3))

    for first in itertools.combinations(cells, 3):
        if not ok(first):
            continue
        rest = [c for c in cells if c not in first]
        for second in itertools.combinations(rest, 3):
            third = tuple(c for c in rest if c not in second)
            if ok(second) and ok(third):
                return [list(first), list(second), list(third)]
    raise AssertionError("a 3x3 Latin square always has three disjoint transversals")


def _preference(label: str, cell: tuple[int, int, int], unit: int) -> float:
    prof = CLASS_PROSODY[label]
    # Whispers carry no pitch level, so the pitch cell a whisper takes is lost to the pitch
    # oracle; rotating it over units keeps the voiced clips' pitch levels balanced.
    pitch_pref = prof.pitch if prof.pitch is not None else unit % 3
    score = 0.0
    for pref, level in ((pitch_pref, cell[0]), (prof.speed, cell[1]), (prof.energy, cell[2])):
        if pref is not None:
            score += 2 - abs(pref - level)
    return score


def voice_split(voice: str, cfg: DemoConfig) -> str:
    if voice in cfg.validation_voices:
        return "validation"
    if voice in cfg.test_voices:
        return "test"
    return "train"


def whisper_voice(voice: str, gender: str) -> str:
    """Same language as the speaker, espeak-ng's whisper variant of the speaker's gender."""
    base, _ = split_voice(voice)
    return f"{base}+{WHISPER_VARIANTS['female' if gender == 'female' else 'male']}"


def plan_corpus(cfg: DemoConfig, genders: dict[str, str]) -> list[ClipPlan]:
    """The full, deterministic clip plan: cfg.clips_per_class units of nine clips."""
    voices = list(cfg.voices)
    sentence_order = {
        label: np.random.default_rng([cfg.seed, 1, k]).permutation(len(SENTENCES[label]))
        for k, label in enumerate(LABELS)
    }
    plans: list[ClipPlan] = []
    for unit in range(cfg.clips_per_class):
        rng = np.random.default_rng([cfg.seed, 0, unit])
        cells = latin_square(unit)
        groups = transversals(cells)
        slot_voice = {}
        for k, group in enumerate(groups):
            voice = voices[(3 * unit + k) % len(voices)]
            for cell in group:
                slot_voice[cell] = voice
        cost = np.array([[-PREFERENCE_STRENGTH * _preference(label, cell, unit) for cell in cells] for label in LABELS])
        cost -= rng.gumbel(size=cost.shape)
        rows, cols = linear_sum_assignment(cost)
        for row, col in zip(rows, cols):
            label = LABELS[row]
            p_idx, s_idx, e_idx = cells[col]
            speaker = slot_voice[cells[col]]
            gender = genders[speaker]
            prof = CLASS_PROSODY[label]
            nudge = (
                (prof.pitch - 1) if prof.pitch is not None else 0,
                prof.speed - 1,
                prof.energy - 1,
            )
            jitter = rng.uniform(-1.0, 1.0, size=3)
            is_whisper = label == "whisper"
            pitch = WHISPER_PITCH if is_whisper else int(round(
                PITCH_SETTING[p_idx] + PITCH_NUDGE * nudge[0] + PITCH_JITTER * jitter[0]))
            speed = int(round(SPEED_SETTING[s_idx] * (1 + SPEED_NUDGE * nudge[1] + SPEED_JITTER * jitter[1])))
            amp_db = AMPLITUDE_NUDGE_DB * nudge[2] + AMPLITUDE_JITTER_DB * jitter[2]
            amplitude = AMPLITUDE_SETTING[e_idx] * 10 ** (amp_db / 20)
            order = sentence_order[label]
            text = SENTENCES[label][order[unit % len(order)]]
            plans.append(ClipPlan(
                unit=unit,
                emotion=label,
                speaker=speaker,
                voice=whisper_voice(speaker, gender) if is_whisper else speaker,
                gender=gender,
                split=voice_split(speaker, cfg),
                transcription=text,
                design_pitch_level=None if is_whisper else PITCH_LEVELS[p_idx],
                design_speed_level=SPEED_LEVELS[s_idx],
                design_energy_level=ENERGY_LEVELS[e_idx],
                pitch=max(0, min(99, pitch)),
                speed=speed,
                amplitude_nominal=round(float(amplitude), 3),
                pitch_range=prof.pitch_range,
            ))
    plans.sort(key=lambda p: (p.unit, LABELS.index(p.emotion)))
    return plans
