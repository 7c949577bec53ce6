"""The loader accepts every format libsndfile reads and rejects each kind of bad clip with its own error."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotionthinker import audio
from emotionthinker.config import AudioConfig

SR = 16000


def _tone(seconds: float, sr: int = SR, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_formats_load_to_mono_16k(tmp_path: Path, fmt: str, ext: str):
    p = tmp_path / f"x.{ext}"
    sf.write(p, _tone(1.0, sr=44100, channels=2), 44100, format=fmt)
    y = audio.load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size / SR - 1.0) < 0.08  # mp3 adds encoder padding
    # The tone survives resampling: the spectral peak stays at 220 Hz.
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * SR / y.size - 220) < 5


def test_8k_stereo_is_resampled(tmp_path: Path):
    p = tmp_path / "x.wav"
    sf.write(p, _tone(2.0, sr=8000, channels=2), 8000)
    y = audio.load_audio(p)
    assert y.size == 2 * SR


@pytest.mark.parametrize(
    "make,err",
    [
        (lambda p: None, audio.AudioNotFoundError),
        (lambda p: p.write_bytes(b""), audio.EmptyAudioError),
        (lambda p: p.write_bytes(b"RIFF\x00\x00junk that is no wave"), audio.AudioDecodeError),
        (lambda p: sf.write(p, np.zeros(SR, np.float32), SR), audio.SilentAudioError),
        (lambda p: sf.write(p, _tone(0.1), SR), audio.TooShortAudioError),
        (lambda p: sf.write(p, _tone(61.0, sr=8000), 8000), audio.TooLongAudioError),
    ],
    ids=["missing", "zero-bytes", "corrupt", "silent", "too-short", "too-long"],
)
def test_bad_clips_raise_typed_errors(tmp_path: Path, make, err):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(err) as exc:
        audio.load_audio(p)
    assert exc.value.reason and str(p) in str(exc.value)


def test_nan_samples(tmp_path: Path):
    x = _tone(1.0)
    x[100:200] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    with pytest.raises(audio.NonFiniteAudioError, match="100 NaN/Inf"):
        audio.load_audio(p)


def test_truncated_wav(tmp_path: Path):
    p = tmp_path / "t.wav"
    sf.write(p, _tone(2.0), SR)
    data = p.read_bytes()
    p.write_bytes(data[:30])  # header cut inside the fmt chunk
    with pytest.raises(audio.AudioError):
        audio.load_audio(p)


def test_directory_is_not_audio(tmp_path: Path):
    with pytest.raises(audio.AudioNotFoundError, match="not a regular file"):
        audio.load_audio(tmp_path)


def test_limits_come_from_config(tmp_path: Path):
    p = tmp_path / "x.wav"
    sf.write(p, _tone(3.0), SR)
    with pytest.raises(audio.TooLongAudioError):
        audio.load_audio(p, AudioConfig(max_duration_s=2.0))
    assert audio.probe(p).duration_s == pytest.approx(3.0)
