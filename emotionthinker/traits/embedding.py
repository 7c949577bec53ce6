"""Utterance embeddings from Whisper's encoder: mean-pooled states of the CTranslate2 model.

The packaged Whisper tiny.en runs through CTranslate2 (int8 on CPU), the same
weights ASR uses. The encoder takes log-mel frames of any length up to its
30 s window; we feed only the speech part of the clip (silence trimmed) so
that leading/trailing silence does not dilute the mean.
"""

from __future__ import annotations

import numpy as np

from emotionthinker.prosody.asr import SAMPLE_RATE, load_whisper_model, speech_bounds

EMBEDDING_COMPUTE_TYPE = "int8"  # part of the feature definition: float32 states differ slightly


class WhisperEncoderEmbedder:
    """y (16 kHz mono) -> mean of the encoder's last-layer states (d_model floats)."""

    def __init__(self, source: str, max_audio_s: float = 30.0, cpu_threads: int = 1) -> None:
        self.source = source
        self.max_frames = int(min(max_audio_s, 30.0) * 100)  # 10 ms mel frames; Whisper's window is 3000
        self.model = load_whisper_model(source, EMBEDDING_COMPUTE_TYPE, cpu_threads)

    def __call__(self, y16k: np.ndarray) -> np.ndarray:
        y = np.asarray(y16k, dtype=np.float32)
        start, end = speech_bounds(y, SAMPLE_RATE)
        pad = int(0.1 * SAMPLE_RATE)
        y = y[max(int(start * SAMPLE_RATE) - pad, 0) : int(end * SAMPLE_RATE) + pad]
        mel = self.model.feature_extractor(y)[:, : self.max_frames]
        if mel.shape[1] % 2:  # the encoder's stride-2 convolution wants an even frame count
            mel = mel[:, :-1]
        states = np.asarray(self.model.encode(mel.astype(np.float32)))  # (1, frames / 2, d_model)
        return states[0].mean(axis=0).astype(np.float64)
