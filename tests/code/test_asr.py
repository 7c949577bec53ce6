"""ASR (packaged Whisper tiny.en via faster-whisper), word timings and known-text alignment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from emotionthinker.audio import load_audio
from emotionthinker.config import AsrConfig
from emotionthinker.prosody.asr import (
    AlignmentError,
    AsrInputError,
    AsrModelUnavailableError,
    Transcriber,
    Word,
    align_words,
    clean_word,
    get_transcriber,
    normalize_token,
    resolve_model_location,
    speech_bounds,
    synthesis_alignment,
    text_words,
)
from tests.conftest import RAVDESS_DIR, requires_ravdess

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
# Statement 01 of RAVDESS, actor 01 (male), neutral.
KIDS_CLIP = RAVDESS_DIR / "Actor_01" / "03-01-01-01-01-01-01.wav"
KIDS_TEXT = "Kids are talking by the door"


def _monotonic(words: list[Word], duration: float) -> None:
    assert all(0.0 <= w.start <= w.end <= duration + 1e-6 for w in words)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:]))


# -- tokens ------------------------------------------------------------------------------------


def test_clean_and_normalize_tokens():
    assert clean_word(" door.") == "door"
    assert clean_word("«Eisschrank»,") == "Eisschrank"
    assert clean_word("don't") == "don't"
    assert normalize_token("Tüten,") == "tüten"
    assert normalize_token("DOOR!") == "door"
    assert text_words("Was sind denn das für Tüten, die da ... stehen?") == [
        "Was", "sind", "denn", "das", "für", "Tüten", "die", "da", "stehen"]


# -- alignment of a known text with fabricated ASR words --------------------------------------


def test_align_words_exact_match_takes_asr_timing():
    heard = [Word("kids", 0.5, 0.8, 0.9), Word("are", 0.8, 1.0, 0.8), Word("talking", 1.0, 1.4, 0.95)]
    out = align_words("Kids are talking.", heard, (0.4, 1.5))
    assert [w.word for w in out] == ["Kids", "are", "talking"]
    assert [(w.start, w.end, w.timing) for w in out] == [(0.5, 0.8, "asr"), (0.8, 1.0, "asr"), (1.0, 1.4, "asr")]
    assert out[0].probability == 0.9


def test_align_words_substitution_and_missing_words_are_interpolated():
    heard = [Word("kids", 0.5, 0.8, 0.9), Word("are", 0.8, 1.0, 0.9), Word("walking", 1.0, 1.4, 0.9),
             Word("by", 1.4, 1.5, 0.9), Word("door", 1.7, 2.0, 0.9)]
    out = align_words("Kids are talking, by the big door!", heard, (0.4, 2.1))
    by_word = {w.word: w for w in out}
    assert [w.word for w in out] == ["Kids", "are", "talking", "by", "the", "big", "door"]
    # 'talking' faces the misheard 'walking': it takes that word's span, marked interpolated.
    assert (by_word["talking"].start, by_word["talking"].end, by_word["talking"].timing) == (1.0, 1.4, "interpolated")
    # 'the big' were not heard: they share the gap between 'by' and 'door', in order.
    assert by_word["the"].start == pytest.approx(1.5) and by_word["big"].end == pytest.approx(1.7)
    assert by_word["the"].end == pytest.approx(by_word["big"].start)
    assert by_word["the"].probability is None and by_word["door"].timing == "asr"
    _monotonic(out, 2.1)


def test_align_words_unheard_edges_use_speech_bounds_and_empty_asr_spreads():
    heard = [Word("are", 1.0, 1.2, 0.9)]
    out = align_words("Kids are here", heard, (0.6, 2.0))
    assert out[0].start == pytest.approx(0.6) and out[0].end == pytest.approx(1.0)
    assert out[2].start == pytest.approx(1.2) and out[2].end == pytest.approx(2.0)
    spread = align_words("one two three", [], (1.0, 2.0))
    assert spread[0].start == 1.0 and spread[-1].end == 2.0 and all(w.timing == "interpolated" for w in spread)
    assert align_words("... !", heard, (0, 1)) == []


def test_speech_bounds_ignore_leading_and_trailing_silence():
    sr = 16000
    y = np.zeros(3 * sr, dtype=np.float32)
    y[sr : 2 * sr] = 0.3 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr)
    start, end = speech_bounds(y, sr)
    assert start == pytest.approx(1.0, abs=0.03) and end == pytest.approx(2.0, abs=0.03)


# -- model sources ------------------------------------------------------------------------------


def test_model_sources_resolve_or_fail_clearly(tmp_path: Path):
    assert (Path(resolve_model_location("packaged:whisper-tiny.en")) / "model.bin").is_file()
    with pytest.raises(AsrModelUnavailableError, match="unknown packaged"):
        resolve_model_location("packaged:whisper-huge")
    with pytest.raises(AsrModelUnavailableError, match="model.bin"):
        resolve_model_location(str(tmp_path))
    # The hub path is real code; offline (local_files_only, empty cache) it must say so, not hang.
    with pytest.raises(AsrModelUnavailableError, match="Hugging Face Hub"):
        resolve_model_location("hub:openai/whisper-large-v3", download_root=str(tmp_path), local_files_only=True)


def test_transcriber_rejects_bad_waveforms():
    asr = Transcriber(AsrConfig())
    with pytest.raises(AsrInputError):
        asr.transcribe(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(AsrInputError):
        asr.transcribe(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(AsrInputError):
        asr.transcribe(np.zeros(0, dtype=np.float32))


def test_get_transcriber_is_cached_per_config():
    a, b = get_transcriber(AsrConfig()), get_transcriber(AsrConfig())
    assert a is b
    assert get_transcriber(AsrConfig(beam_size=2)) is not a


# -- synthesis alignment -----------------------------------------------------------------------


def _espeak(ssml: str, voice: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-m", "-v", voice, "-w", str(path), ssml], check=True, capture_output=True)
    return load_audio(path)


@requires_espeak
def test_synthesis_alignment_puts_the_boundary_in_a_known_pause(tmp_path: Path):
    # A different voice from the aligner's en-us reference; a 600 ms pause after 'talking'.
    y = _espeak('<speak>Kids are talking <break time="600ms"/> by the door.</speak>', "en-gb+f3", tmp_path / "x.wav")
    db = 10 * np.log10(np.convolve(y.astype(np.float64) ** 2, np.ones(160) / 160, mode="same") + 1e-12)
    quiet = db < db.max() - 50
    # The longest quiet run inside the speech is the pause.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]])))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if a > 0 and b < y.size]
    pause_start, pause_end = (x / 16000 for x in max(runs, key=lambda r: r[1] - r[0]))
    spans = synthesis_alignment(y, KIDS_TEXT.split(), "en-us")
    assert len(spans) == 6
    talking_end, by_start = spans[2][1], spans[3][0]
    assert talking_end <= pause_start + 0.08
    assert by_start >= pause_end - 0.08


def test_synthesis_alignment_fails_cleanly_without_a_voice():
    y = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    with pytest.raises(AlignmentError):
        synthesis_alignment(y, ["hello", "world"], "no-such-voice-xx")


# -- real RAVDESS clip ---------------------------------------------------------------------------


@requires_ravdess
def test_asr_on_ravdess_gives_the_known_text():
    y = load_audio(KIDS_CLIP)
    tr = get_transcriber(AsrConfig()).transcribe(y)
    assert [normalize_token(w) for w in text_words(tr.text)] == KIDS_TEXT.lower().split()
    assert [normalize_token(w.word) for w in tr.words] == KIDS_TEXT.lower().split()
    assert all(w.timing == "synthesis" and 0 < w.probability <= 1 for w in tr.words)
    _monotonic(tr.words, y.size / 16000)
    # RAVDESS clips open with ~1 s of silence: the first word cannot start at 0.
    assert tr.words[0].start > 0.5


@requires_ravdess
def test_align_known_text_on_ravdess_both_timings_agree():
    y = load_audio(KIDS_CLIP)
    text = "Kids are talking by the door."
    by_synthesis = get_transcriber(AsrConfig()).align_known_text(y, text)
    by_asr = get_transcriber(AsrConfig(word_timing="asr")).align_known_text(y, text)
    for tr in (by_synthesis, by_asr):
        assert tr.source == "corpus" and tr.text == text
        assert [w.word for w in tr.words] == KIDS_TEXT.split()
        _monotonic(tr.words, y.size / 16000)
    assert all(w.timing == "asr" for w in by_asr.words)  # Whisper heard every word
    # The two methods place each word's middle within 0.35 s of each other.
    mids = [((a.start + a.end) / 2, (b.start + b.end) / 2) for a, b in zip(by_synthesis.words, by_asr.words)]
    assert max(abs(a - b) for a, b in mids) < 0.35
