"""Comparative augmentation: one utterance rendered at three pitch/energy/speed ranks in one clip.

The source clip is trimmed of leading/trailing silence (and cropped when three
renditions would not fit the model's audio window), rendered at the three rank
parameters (librosa pitch shift, gain, librosa time stretch), put in a seeded
random order with short silences between, and written as one clip. The label
is the order of ranks. A rendering only becomes a sample if each segment, cut
back out of the final clip and re-measured with measure_prosody, ranks where
it was meant to by a margin: a pitch shift that the F0 tracker does not see,
or a stretch that blurs the syllable count, would teach the model a wrong
order.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotionthinker.config import Config, ProsodyConfig, SftDataConfig
from emotionthinker.prosody.f0 import ProsodyInputError
from emotionthinker.prosody.measures import measure_prosody
from emotionthinker.sft_data.prompts import COMPARATIVE_RANKS, unit_hash
from emotionthinker.stored_paths import resolve_stored_path

# attribute -> the measure its ranks must follow
MEASURES: dict[str, str] = {"pitch": "f0_median_st", "energy": "rms_dbfs", "speed": "articulation_rate_sps"}
FADE_S = 0.01  # fade at crop edges: a hard cut clicks, and a click is an energy peak
PEAK_LIMIT = 0.99


def rank_parameters(attribute: str, cfg: SftDataConfig) -> dict[str, float]:
    """Rank name -> render parameter (semitones, dB or stretch rate) from the config."""
    values = {"pitch": cfg.pitch_shifts_st, "energy": cfg.energy_gains_db, "speed": cfg.speed_rates}[attribute]
    return dict(zip(COMPARATIVE_RANKS[attribute], values))


def choose_order(attribute: str, seed: int, source_id: str) -> tuple[str, str, str]:
    """One of the six orders of the three ranks, fixed by seed and source id."""
    orders = list(itertools.permutations(COMPARATIVE_RANKS[attribute]))
    return orders[unit_hash(seed, "order", attribute, source_id) % len(orders)]


def duration_factor(attribute: str, params: dict[str, float]) -> float:
    """Length of the three renditions together in units of the source length."""
    return sum(1.0 / r for r in params.values()) if attribute == "speed" else 3.0


def render_segment(y: np.ndarray, sr: int, attribute: str, param: float, n_fft: int) -> np.ndarray:
    import librosa

    if attribute == "pitch":
        out = librosa.effects.pitch_shift(y, sr=sr, n_steps=param) if param else y.copy()
    elif attribute == "energy":
        out = y * np.float32(10.0 ** (param / 20.0))
    elif attribute == "speed":
        out = librosa.effects.time_stretch(y, rate=param, n_fft=n_fft) if param != 1.0 else y.copy()
    else:
        raise ValueError(f"no comparative rendering for attribute {attribute!r}")
    return np.asarray(out, dtype=np.float32)


class SourceUnusable(Exception):
    """The source clip cannot give a comparative clip; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def prepare_source(y: np.ndarray, sr: int, attribute: str, cfg: SftDataConfig, max_clip_s: float) -> np.ndarray:
    """Trim silence and fit three renditions plus gaps into max_clip_s (crop, or raise SourceUnusable)."""
    import librosa

    trimmed, _ = librosa.effects.trim(y, top_db=cfg.trim_top_db)
    factor = duration_factor(attribute, rank_parameters(attribute, cfg))
    longest = (max_clip_s - 2 * cfg.gap_s) / factor * 0.99  # 1% for the stretch's rounding of lengths
    if trimmed.size / sr > longest:
        if not cfg.crop_to_fit:
            raise SourceUnusable("too_long", f"{trimmed.size / sr:.2f} s of speech, at most {longest:.2f} s fit")
        trimmed = trimmed[: int(longest * sr)]
    if trimmed.size / sr < cfg.min_segment_s:
        raise SourceUnusable("too_short", f"{trimmed.size / sr:.2f} s < sft_data.min_segment_s={cfg.min_segment_s:g}")
    out = trimmed.astype(np.float32, copy=True)
    n = min(int(FADE_S * sr), out.size // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        out[:n] *= ramp
        out[-n:] *= ramp[::-1]
    return out


def segment_value(y: np.ndarray, sr: int, attribute: str, pcfg: ProsodyConfig) -> float:
    """The measure the attribute's ranks must follow; NaN when the segment cannot be measured."""
    try:
        m = measure_prosody(y, sr, pcfg)
    except ProsodyInputError:
        return float("nan")
    return float(getattr(m, MEASURES[attribute]))


def check_order(attribute: str, values: dict[str, float], cfg: SftDataConfig) -> str | None:
    """None when measured values rise with the intended rank by the margin; else the reason."""
    ranks = COMPARATIVE_RANKS[attribute]
    v = [values[r] for r in ranks]
    shown = ", ".join(f"{r}={values[r]:.2f}" for r in ranks)
    if not all(np.isfinite(v)):
        return f"unmeasurable: {MEASURES[attribute]} {shown}"
    for lo, hi in zip(v, v[1:]):
        if attribute == "speed":
            ok = lo > 0 and hi / lo >= cfg.speed_margin_ratio
        else:
            ok = hi - lo >= (cfg.pitch_margin_st if attribute == "pitch" else cfg.energy_margin_db)
        if not ok:
            return f"order_mismatch: {MEASURES[attribute]} {shown}"
    return None


@dataclass
class ComparativeClip:
    attribute: str
    order: tuple[str, ...]
    params: dict[str, float]
    audio: np.ndarray = field(repr=False)
    sample_rate: int
    segments: list[tuple[float, float]]  # (start, end) seconds of each rendition in the clip, in order
    values: dict[str, float]  # rank -> re-measured value
    reason: str | None  # None: kept

    @property
    def kept(self) -> bool:
        return self.reason is None

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate


def render_comparative(
    y: np.ndarray, sr: int, attribute: str, order: tuple[str, ...], params: dict[str, float], cfg: Config
) -> ComparativeClip:
    """Render `y` (already prepared) at params[rank] for each rank in `order`, then re-measure every segment.

    params maps each rank name to its render parameter; passing a wrong one (e.g. 0 st for 'high') is
    how a mislabelled rendering is made, and it must come back with a reason.
    """
    sft = cfg.sft_data
    gap = np.zeros(int(round(sft.gap_s * sr)), dtype=np.float32)
    pieces, bounds, pos = [], [], 0
    for i, rank in enumerate(order):
        seg = render_segment(y, sr, attribute, params[rank], sft.stretch_n_fft)
        if i:
            pieces.append(gap)
            pos += gap.size
        pieces.append(seg)
        bounds.append((pos, pos + seg.size))
        pos += seg.size
    audio = np.concatenate(pieces)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > PEAK_LIMIT:  # one gain for the whole clip: relative levels, which are the label, stay
        audio *= np.float32(PEAK_LIMIT / peak)
    values = {rank: segment_value(audio[a:b], sr, attribute, cfg.prosody) for rank, (a, b) in zip(order, bounds)}
    return ComparativeClip(
        attribute=attribute,
        order=tuple(order),
        params=dict(params),
        audio=audio,
        sample_rate=sr,
        segments=[(a / sr, b / sr) for a, b in bounds],
        values=values,
        reason=check_order(attribute, values, sft),
    )


def write_wav(path: Path, y: np.ndarray, sr: int) -> None:
    """Atomic write, so a killed run never leaves a half file that a rerun would trust."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, y, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def render_job(job: dict[str, Any]) -> dict[str, Any]:
    """Render one planned augmentation to its wav (only when kept); return its decision record.

    Takes and returns plain data so it runs in a worker process.
    """
    from emotionthinker.audio import AudioError, load_audio

    cfg = Config.model_validate(job["config"])
    attribute, order = job["attribute"], tuple(job["order"])
    sr = cfg.audio.sample_rate
    decision = {k: job[k] for k in ("key", "sample_id", "source_id", "attribute", "order", "audio_path")}
    try:
        y = load_audio(job["source_audio"], cfg.audio)
        y = prepare_source(y, sr, attribute, cfg.sft_data, job["max_clip_s"])
    except AudioError as err:
        return {**decision, "status": "skipped", "reason": f"audio:{err.reason}"}
    except SourceUnusable as err:
        return {**decision, "status": "skipped", "reason": err.reason, "detail": err.detail}
    clip = render_comparative(y, sr, attribute, order, rank_parameters(attribute, cfg.sft_data), cfg)
    decision.update(
        values={k: (round(v, 4) if np.isfinite(v) else None) for k, v in clip.values.items()},
        segments=[[round(a, 4), round(b, 4)] for a, b in clip.segments],
        duration_s=round(clip.duration_s, 4),
        params=clip.params,
    )
    if not clip.kept:
        return {**decision, "status": "dropped", "reason": clip.reason}
    write_wav(resolve_stored_path(job["audio_path"]), clip.audio, sr)
    return {**decision, "status": "kept", "reason": None}
