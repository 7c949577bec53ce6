"""espeak-ng as a subprocess: availability, voice catalogue (gender), rendering and syllable counts.

espeak-ng writes 22.05 kHz 16-bit mono; the platform's audio is 16 kHz, so
every rendering is resampled here (soxr through librosa) before anyone sees it.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
from dataclasses import dataclass

import librosa
import numpy as np
import soundfile as sf

INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or your system's package manager"
_FULL_SCALE = 32767


class EspeakError(RuntimeError):
    """espeak-ng is missing, failed, or ignored a requested setting."""


class EspeakNotFoundError(EspeakError):
    """The espeak-ng binary is not on PATH."""


class VoiceError(EspeakError):
    """A configured voice does not exist or espeak-ng silently ignores its variant."""


@dataclass(frozen=True)
class Rendering:
    samples: np.ndarray  # float32 mono at the requested rate
    sample_rate: int
    clipped_samples: int  # samples espeak-ng itself wrote at full scale (int16 clipping)


def find_espeak(binary: str = "espeak-ng") -> str:
    """Absolute path of the binary, or EspeakNotFoundError with the install command."""
    path = shutil.which(binary)
    if path is None:
        raise EspeakNotFoundError(f"espeak-ng not found (looked for {binary!r} on PATH): {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=8)
def espeak_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"text-to-speech:\s*(\S+)", out)
    return f"espeak-ng {m.group(1)}" if m else "espeak-ng (unknown version)"


def _voice_table(binary: str, which: str) -> list[list[str]]:
    out = subprocess.run([binary, f"--voices={which}" if which else "--voices"], capture_output=True,
                         text=True, check=False).stdout
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


@functools.lru_cache(maxsize=8)
def voice_genders(binary: str) -> tuple[dict[str, str], dict[str, str]]:
    """(language code -> gender, variant file name -> gender) from espeak-ng's own voice listing.

    Rows look like ``Pty Language Age/Gender VoiceName File (Other languages)``;
    MBROLA voices (File ``mb/...``) need extra data files and are left out.
    """
    languages: dict[str, str] = {}
    for row in _voice_table(binary, ""):
        if len(row) < 5 or row[4].startswith("mb/") or row[1] == "variant":
            continue
        gender = _gender(row[2])
        languages.setdefault(row[1], gender)
        for other in re.findall(r"\(([^\s()]+) \d+\)", " ".join(row[5:])):
            languages.setdefault(other, gender)
    variants = {row[4].split("/", 1)[1]: _gender(row[2]) for row in _voice_table(binary, "variant")
                if len(row) >= 5 and row[4].startswith("!v/")}
    return languages, variants


def _gender(age_gender: str) -> str:
    code = age_gender.rsplit("/", 1)[-1].upper()
    return {"M": "male", "F": "female"}.get(code, "unknown")


def split_voice(voice: str) -> tuple[str, str | None]:
    """'en-us+f3' -> ('en-us', 'f3'); 'en-us' -> ('en-us', None)."""
    base, _, variant = voice.partition("+")
    return base, (variant or None)


def voice_gender(voice: str, binary: str) -> str:
    """male / female from the variant's declared gender, else the base voice's; VoiceError if unknown."""
    languages, variants = voice_genders(binary)
    base, variant = split_voice(voice)
    if base not in languages:
        raise VoiceError(f"espeak-ng has no voice {base!r} (see `espeak-ng --voices`)")
    if variant is not None:
        if variant not in variants:
            raise VoiceError(f"espeak-ng has no voice variant {variant!r} (see `espeak-ng --voices=variant`)")
        return variants[variant]
    return languages[base]


def espeak_command(binary: str, voice: str, pitch: int, speed: int, amplitude: int, ssml: str) -> list[str]:
    """The exact argv that renders one clip (stored per clip, so it can be replayed by hand)."""
    return [binary, "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amplitude), "-m", "--stdout", ssml]


def render(command: list[str], sample_rate: int) -> Rendering:
    """Run one espeak-ng command and return mono float32 at ``sample_rate``."""
    proc = subprocess.run(command, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise EspeakError(f"espeak-ng failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
    pcm, native_rate = sf.read(io.BytesIO(proc.stdout), dtype="int16")
    if pcm.size == 0:
        raise EspeakError(f"espeak-ng produced no audio for {command!r}")
    clipped = int(np.count_nonzero(np.abs(pcm.astype(np.int32)) >= _FULL_SCALE))
    y = pcm.astype(np.float32) / 32768.0
    if native_rate != sample_rate:
        y = librosa.resample(y, orig_sr=native_rate, target_sr=sample_rate, res_type="soxr_hq").astype(np.float32)
    return Rendering(y, sample_rate, clipped)


# IPA vowel letters espeak-ng uses for English; a run of them (a diphthong) is one syllable nucleus.
_IPA_VOWELS = "aeiouyæɐɑɒɔəɚɛɜɝɞɘɪɨʊʉʌʏøœɤɯɵ\u1d7b"  # U+1D7B: espeak's reduced vowel
_NUCLEUS = re.compile(f"[{_IPA_VOWELS}][{_IPA_VOWELS}ːˑ]*|[nlmr]\u0329")


def syllable_count(binary: str, voice: str, text: str) -> int:
    """Syllables espeak-ng actually speaks: vowel nuclei of its IPA transcription (rate oracle)."""
    proc = subprocess.run([binary, "-q", "--ipa", "-v", voice, text], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EspeakError(f"espeak-ng --ipa failed: {proc.stderr.strip()}")
    return len(_NUCLEUS.findall(proc.stdout))


def speech_rms_dbfs(y: np.ndarray, sample_rate: int, frame_s: float = 0.02, floor_db: float = 35.0) -> float:
    """RMS level over frames within ``floor_db`` of the loudest frame: pauses do not dilute it."""
    n = max(1, int(frame_s * sample_rate))
    frames = y[: len(y) // n * n].reshape(-1, n).astype(np.float64)
    power = (frames**2).mean(axis=1)
    db = 10 * np.log10(power + 1e-20)
    speech = db > db.max() - floor_db
    return float(10 * np.log10(power[speech].mean() + 1e-20))


def check_variant_applied(binary: str, voice: str, sample_rate: int) -> None:
    """espeak-ng ignores some base+variant pairs without a word (e.g. 'en-gb+f3'): refuse those."""
    base, variant = split_voice(voice)
    if variant is None:
        return
    probe = "<speak>one two three</speak>"
    with_variant = render(espeak_command(binary, voice, 50, 165, 100, probe), sample_rate).samples
    plain = render(espeak_command(binary, base, 50, 165, 100, probe), sample_rate).samples
    if with_variant.shape == plain.shape and np.array_equal(with_variant, plain):
        raise VoiceError(
            f"espeak-ng ignores variant {variant!r} on voice {base!r} (output identical to {base!r}); "
            f"use another base, e.g. 'en+{variant}' or 'en-us+{variant}'"
        )
