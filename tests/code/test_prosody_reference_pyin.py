"""The librosa.pyin reference annotator: same measures, pYIN F0 (55-500 Hz, 10 ms hop)."""

from __future__ import annotations

import numpy as np
import pytest

from emotionthinker.prosody.measures import measure_prosody
from emotionthinker.prosody.reference_pyin import PYIN_HOP_S, measure_prosody_pyin, track_f0_pyin

SR = 16000


def _voice(f0_hz: np.ndarray) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0_hz) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 11))
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


@pytest.mark.slow  # numba compiles pYIN on first use (seconds to a minute)
def test_pyin_reference_agrees_with_praat_on_known_f0(cfg):
    silence = np.zeros(SR // 4, np.float32)
    y = np.concatenate([silence, _voice(np.geomspace(120.0, 200.0, int(1.5 * SR))), silence])
    track = track_f0_pyin(y, SR)
    assert np.allclose(np.diff(track.times), PYIN_HOP_S)
    ref = measure_prosody_pyin(y, SR, cfg.prosody)
    dsp = measure_prosody(y, SR, cfg.prosody)
    assert ref.f0_median_hz == pytest.approx(np.sqrt(120.0 * 200.0), rel=0.02)
    assert ref.f0_median_hz == pytest.approx(dsp.f0_median_hz, rel=0.02)
    assert ref.intonation.label == dsp.intonation.label == "rising"
    # energy, speech frames and syllable nuclei are shared code: identical
    assert (ref.rms_dbfs, ref.speech_duration_s, ref.n_syllables) == (dsp.rms_dbfs, dsp.speech_duration_s, dsp.n_syllables)
    assert set(ref.to_record()) == set(dsp.to_record())
