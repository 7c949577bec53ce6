"""One audio loader: any format libsndfile reads, any rate and channel count -> mono float32 at 16 kHz.

Every way a clip can be unusable has its own exception type so batch code can
quarantine the record with a precise reason and go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from emotionthinker.config import AudioConfig
from emotionthinker.stored_paths import resolve_stored_path


class AudioError(Exception):
    """Base class: the clip cannot be used. ``reason`` is a short machine-readable code."""

    reason = "audio_error"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.reason}: {path}: {detail}")


class AudioNotFoundError(AudioError):
    reason = "unreadable_path"


class AudioDecodeError(AudioError):
    reason = "corrupt"


class EmptyAudioError(AudioError):
    reason = "empty"


class NonFiniteAudioError(AudioError):
    reason = "non_finite_samples"


class SilentAudioError(AudioError):
    reason = "silent"


class TooShortAudioError(AudioError):
    reason = "too_short"


class TooLongAudioError(AudioError):
    reason = "too_long"


@dataclass(frozen=True)
class AudioInfo:
    path: str
    source_rate: int
    channels: int
    duration_s: float
    format: str


def probe(path: str | Path, cfg: AudioConfig | None = None) -> AudioInfo:
    """Read the header only: cheap checks (exists, decodable, duration bounds) before decoding.

    A relative path is a record's stored path: it resolves against the project root, not the cwd.
    """
    cfg = cfg or AudioConfig()
    given, path = path, resolve_stored_path(path)
    if not path.is_file():
        detail = "no such file" if not path.exists() else "not a regular file"
        if not Path(given).expanduser().is_absolute():
            detail += f" (the record's relative path {str(given)!r} is taken against the project root)"
        raise AudioNotFoundError(path, detail)
    if path.stat().st_size == 0:
        raise EmptyAudioError(path, "file has zero bytes")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioDecodeError(path, f"libsndfile cannot open it ({exc})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise EmptyAudioError(path, "no audio frames")
    duration = info.frames / info.samplerate
    if duration > cfg.max_duration_s:
        raise TooLongAudioError(path, f"{duration:.1f} s exceeds audio.max_duration_s={cfg.max_duration_s:g}")
    return AudioInfo(str(path), info.samplerate, info.channels, duration, info.format)


def load_audio(path: str | Path, cfg: AudioConfig | None = None) -> np.ndarray:
    """Decode, downmix, resample to cfg.sample_rate and check the content; raise an AudioError subclass."""
    cfg = cfg or AudioConfig()
    info = probe(path, cfg)
    path = info.path  # resolved by probe, whose not-found error explains a relative path
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioDecodeError(path, f"decoding failed ({exc})") from None
    if data.size == 0:
        raise EmptyAudioError(path, "decoded to zero samples")
    if not np.isfinite(data).all():
        raise NonFiniteAudioError(path, f"{int((~np.isfinite(data)).sum())} NaN/Inf samples")
    mono = data.mean(axis=1)
    if rate != cfg.sample_rate:
        import soxr  # what librosa's soxr_hq calls, without librosa's ~1-2 s first-call cost per process

        mono = soxr.resample(mono, rate, cfg.sample_rate, quality="HQ")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    duration = mono.size / cfg.sample_rate
    if duration < cfg.min_duration_s:
        raise TooShortAudioError(path, f"{duration:.3f} s is below audio.min_duration_s={cfg.min_duration_s:g}")
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    peak_db = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_db < cfg.silence_peak_dbfs:
        raise SilentAudioError(path, f"peak {peak_db:.1f} dBFS is below audio.silence_peak_dbfs={cfg.silence_peak_dbfs:g}")
    return mono
