"""Reference annotator: the same measures with F0 from librosa.pyin (the upstream choice).

Used by the speed benchmark to compare speed and level agreement with the
Praat tracker. pYIN settings follow the upstream annotation: 55-500 Hz, 10 ms
hop. Only the F0 tracker differs; energy, speech frames, syllable nuclei and
intonation are the shared code in measures.py.
"""

from __future__ import annotations

import numpy as np

from emotionthinker.config import ProsodyConfig
from emotionthinker.prosody.f0 import F0Track, check_signal
from emotionthinker.prosody.measures import ProsodyMeasures, measures_from_f0

PYIN_FMIN_HZ = 55.0
PYIN_FMAX_HZ = 500.0
PYIN_HOP_S = 0.01
PYIN_FRAME_S = 0.064  # 3.5 periods of 55 Hz: long enough for pYIN's lag range


def track_f0_pyin(y: np.ndarray, sr: int) -> F0Track:
    import librosa  # ~1 s import and a numba JIT on first call: only the reference pays it

    y = check_signal(y, sr).astype(np.float32)
    hop = int(round(PYIN_HOP_S * sr))
    frame = int(2 ** np.ceil(np.log2(PYIN_FRAME_S * sr)))
    f0, voiced_flag, _ = librosa.pyin(y, fmin=PYIN_FMIN_HZ, fmax=PYIN_FMAX_HZ, sr=sr, frame_length=frame, hop_length=hop)
    f0 = np.where(voiced_flag, f0, np.nan).astype(np.float64)
    times = librosa.times_like(f0, sr=sr, hop_length=hop)  # centred frames
    return F0Track(times.astype(np.float64), f0, PYIN_FMIN_HZ, PYIN_FMAX_HZ)


def measure_prosody_pyin(y: np.ndarray, sr: int, cfg: ProsodyConfig) -> ProsodyMeasures:
    """measure_prosody with pYIN in place of Praat for the F0 track."""
    track = track_f0_pyin(y, sr)
    return measures_from_f0(y, sr, track.times, track.f0_hz, cfg, f0_range=(track.floor_hz, track.ceiling_hz))
