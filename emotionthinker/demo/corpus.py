"""Synthesise the demo corpus and its glide subset; write ``metadata.jsonl`` and ``glides.jsonl``.

Layout under the output folder::

    metadata.jsonl            one line per clip (read by the `demo` corpus adapter)
    glides.jsonl              clips with a known F0 contour (intonation oracle)
    clips/<class>/<class>-u<unit>-<settings hash>.wav
    glides/<pattern>-<index>-<settings hash>.wav

File names carry a hash of the exact synthesis settings, so a re-run skips
clips that exist, renders only what changed, removes clips no longer planned
and rewrites the metadata; files are written to a temporary name and renamed,
so a killed run never leaves a half-written clip that a re-run would keep.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import parselmouth
import soundfile as sf

from emotionthinker.config import Config
from emotionthinker.demo import espeak
from emotionthinker.demo.design import (
    PITCH_SETTING, WHISPER_PITCH, WHISPER_VARIANTS, ClipPlan, plan_corpus, settings_hash, ssml,
)
from emotionthinker.demo.espeak import split_voice
from emotionthinker.demo.glides import GlidePlan, contour_points, impose_contour, plan_glides, voiced_span
from emotionthinker.records import write_jsonl

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
GLIDES_FILE = "glides.jsonl"
CLIPS_DIR = "clips"
GLIDES_DIR = "glides"
RESAMPLER = "soxr_hq"
# Every voice is brought to the same level before the energy bands apply: a reference
# sentence at -a 100 should read REFERENCE_DBFS over speech frames. Loudness also rises with
# espeak's -p (more glottal pulses per second: ~3-5 dB from -p 5 to -p 95), so the
# compensation is measured at the pitch band centres and interpolated. Without this a quiet
# voice (espeak's male whisper, ~4 dB down) or a low-pitched clip would blur the energy oracle.
REFERENCE_TEXT = "The north wind and the sun were disputing which of them was the stronger."
REFERENCE_DBFS = -21.0
REFERENCE_PITCHES = PITCH_SETTING
MAX_COMPENSATION_DB = 8.0
MAX_AMPLITUDE = 200  # espeak-ng's -a ceiling

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Context:
    binary: str
    engine: str
    sample_rate: int
    loudness: dict[str, tuple[tuple[int, ...], tuple[float, ...]]]  # voice -> (pitches, compensation dB)
    seed: int

    def compensation_db(self, voice: str, pitch: int) -> float:
        pitches, comp = self.loudness[voice]
        return float(np.interp(pitch, pitches, comp))


def _pool_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    # Threads suffice: the work is espeak-ng subprocesses and soxr, both outside the GIL.
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _workers(cfg: Config) -> int:
    return cfg.demo.workers or os.cpu_count() or 1


def _loudness_profile(binary: str, voice: str, sample_rate: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Gain (dB) that brings ``voice`` to REFERENCE_DBFS at -a 100, at each reference pitch."""
    espeak.check_variant_applied(binary, voice, sample_rate)
    is_whisper = split_voice(voice)[1] in WHISPER_VARIANTS.values()
    pitches = (WHISPER_PITCH,) if is_whisper else tuple(REFERENCE_PITCHES)
    comp = []
    for pitch in pitches:
        cmd = espeak.espeak_command(binary, voice, pitch, 165, 100, ssml(REFERENCE_TEXT, "medium"))
        level = espeak.speech_rms_dbfs(espeak.render(cmd, sample_rate).samples, sample_rate)
        comp.append(float(np.clip(REFERENCE_DBFS - level, -MAX_COMPENSATION_DB, MAX_COMPENSATION_DB)))
    return pitches, tuple(comp)


def _prepare(cfg: Config, voices_needed: Callable[[dict[str, str]], set[str]]) -> tuple[_Context, dict[str, str]]:
    binary = espeak.find_espeak(cfg.demo.espeak_binary)
    genders = {v: espeak.voice_gender(v, binary) for v in cfg.demo.voices}
    synth_voices = sorted(voices_needed(genders))
    for v in synth_voices:
        espeak.voice_gender(v, binary)  # unknown voice/variant -> VoiceError before any work
    sr = cfg.audio.sample_rate
    profiles = _pool_map(lambda v: _loudness_profile(binary, v, sr), synth_voices, _workers(cfg))
    ctx = _Context(binary, espeak.espeak_version(binary), sr, dict(zip(synth_voices, profiles)), cfg.demo.seed)
    return ctx, genders


def _settings(ctx: _Context, voice: str, pitch: int, speed: int, amplitude_nominal: float, pitch_range: str,
              text: str) -> tuple[dict[str, Any], list[str]]:
    comp = ctx.compensation_db(voice, pitch)
    amplitude = int(min(MAX_AMPLITUDE, max(1, round(amplitude_nominal * 10 ** (comp / 20)))))
    markup = ssml(text, pitch_range)
    argv = espeak.espeak_command(ctx.binary, voice, pitch, speed, amplitude, markup)
    shown = [Path(argv[0]).name, *argv[1:]]  # replayable on any machine with espeak-ng on PATH
    settings = {
        "engine": ctx.engine,
        "voice": voice,
        "pitch": pitch,
        "speed": speed,
        "amplitude": amplitude,
        "amplitude_nominal": amplitude_nominal,
        "loudness_compensation_db": round(comp, 2),
        "pitch_range": pitch_range,
        "ssml": markup,
        "command": shlex.join(shown),
        "sample_rate": ctx.sample_rate,
        "resampler": RESAMPLER,
    }
    return settings, argv


def _write_wav(path: Path, y: np.ndarray, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, y, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _clip_record(plan: ClipPlan, ctx: _Context, root: Path) -> dict[str, Any]:
    settings, argv = _settings(ctx, plan.voice, plan.pitch, plan.speed, plan.amplitude_nominal,
                               plan.pitch_range, plan.transcription)
    rel = f"{CLIPS_DIR}/{plan.slug}/{plan.slug}-u{plan.unit:02d}-{settings_hash(settings)}.wav"
    path = root / rel
    if not path.is_file():
        rendering = espeak.render(argv, ctx.sample_rate)
        if rendering.clipped_samples:
            log.warning("espeak-ng clipped %d samples of %s", rendering.clipped_samples, rel)
        _write_wav(path, rendering.samples, ctx.sample_rate)
    return {
        "audio_path": rel,
        "emotion": plan.emotion,
        "transcription": plan.transcription,
        "speaker": plan.speaker,
        "gender": plan.gender,
        "split": plan.split,
        "design_pitch_level": plan.design_pitch_level,
        "design_speed_level": plan.design_speed_level,
        "design_energy_level": plan.design_energy_level,
        "n_syllables": espeak.syllable_count(ctx.binary, plan.voice, plan.transcription),
        "synthesis": {**settings, "unit": plan.unit, "seed": ctx.seed},
    }


def _glide_record(plan: GlidePlan, ctx: _Context, root: Path) -> dict[str, Any]:
    settings, argv = _settings(ctx, plan.voice, plan.pitch, plan.speed, plan.amplitude_nominal,
                               plan.pitch_range, plan.transcription)
    # The contour depends on the source's voiced stretch, so the source is always rendered
    # (milliseconds); only the resynthesised file is skipped when it exists.
    source = espeak.render(argv, ctx.sample_rate).samples
    t0, t1, center = voiced_span(source, ctx.sample_rate, plan.gender)
    points = contour_points(plan.design_intonation, t0, t1, center, plan.span_st)
    settings["resynthesis"] = (f"Praat Manipulation: pitch tier replaced by design_f0_points, overlap-add "
                               f"(parselmouth {parselmouth.__version__})")
    digest = settings_hash({**settings, "points": points})
    rel = f"{GLIDES_DIR}/{plan.design_intonation}-{plan.index:02d}-{digest}.wav"
    path = root / rel
    if not path.is_file():
        y = impose_contour(source, ctx.sample_rate, points, plan.gender)
        if float(np.max(np.abs(y))) >= 1.0:  # the source is at "normal" energy, far below full scale
            log.warning("glide %s clips after resynthesis", rel)
        _write_wav(path, y, ctx.sample_rate)
    return {
        "audio_path": rel,
        "emotion": "neutral",
        "transcription": plan.transcription,
        "speaker": plan.speaker,
        "gender": plan.gender,
        "split": plan.split,
        "design_intonation": plan.design_intonation,
        "design_f0_points": [list(p) for p in points],
        "design_span_st": plan.span_st,
        "n_syllables": espeak.syllable_count(ctx.binary, plan.voice, plan.transcription),
        "synthesis": {**settings, "seed": ctx.seed},
    }


def _prune(root: Path, subdir: str, keep: set[str]) -> int:
    """Remove clips (and torn temp files) a previous configuration left behind."""
    removed = 0
    for path in sorted((root / subdir).rglob("*")):
        if path.is_file() and path.suffix in {".wav", ".tmp"} and path.relative_to(root).as_posix() not in keep:
            path.unlink()
            removed += 1
    return removed


def _write_glides(root: Path, cfg: Config, ctx: _Context, genders: dict[str, str]) -> tuple[int, int]:
    records = _pool_map(lambda p: _glide_record(p, ctx, root), plan_glides(cfg.demo, genders), _workers(cfg))
    removed = _prune(root, GLIDES_DIR, {r["audio_path"] for r in records})
    write_jsonl(root / GLIDES_FILE, records)
    return len(records), removed


def synthesize_glides(out_dir: Path, cfg: Config) -> Path:
    """Render only the known-contour glides under ``out_dir/glides``; return ``out_dir/glides.jsonl``."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    ctx, genders = _prepare(cfg, lambda g: {p.voice for p in plan_glides(cfg.demo, g)})
    _write_glides(root, cfg, ctx, genders)
    return root / GLIDES_FILE


def synthesize_demo_corpus(out_dir: Path, cfg: Config) -> Path:
    """Render the nine-class demo corpus and its glides under ``out_dir``; return the metadata path."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    ctx, genders = _prepare(cfg, lambda g: {p.voice for p in plan_corpus(cfg.demo, g)}
                            | {p.voice for p in plan_glides(cfg.demo, g)})
    records = _pool_map(lambda p: _clip_record(p, ctx, root), plan_corpus(cfg.demo, genders), _workers(cfg))
    removed = _prune(root, CLIPS_DIR, {r["audio_path"] for r in records})
    write_jsonl(root / METADATA_FILE, records)
    n_glides, removed_glides = _write_glides(root, cfg, ctx, genders)
    log.info("demo corpus: %d clips, %d glides in %s (%d stale files removed)",
             len(records), n_glides, root, removed + removed_glides)
    return root / METADATA_FILE
