"""Prosody DSP (EmotionCoT stage 1): raw measures, calibrated levels, intonation.

Typical use for one batch::

    m = measure_prosody(y, sr, cfg.prosody)            # per clip, in workers
    cal = fit_calibration([(corpus, gender, m), ...], cfg.prosody)
    levels, used = assign_levels(m, corpus, gender, cal)
    record["prosody"] = {**m.to_record(), "calibration": used}
    record["annotations"]["intonation"] = m.intonation.label

The librosa.pyin reference lives in emotionthinker.prosody.reference_pyin
(not imported here: librosa is slow to import and only the benchmark needs it).
"""

from emotionthinker.prosody.f0 import F0Track, ProsodyInputError, to_semitones, track_f0
from emotionthinker.prosody.intonation import (
    PATTERNS,
    RELEASED_INTONATION,
    STYLES,
    IntonationResult,
    classify_intonation,
    released_intonation,
)
from emotionthinker.prosody.levels import (
    Calibration,
    CalibrationError,
    assign_levels,
    fit_calibration,
    fit_calibration_from_records,
)
from emotionthinker.prosody.measures import ProsodyMeasures, measure_prosody, measures_from_f0

__all__ = [
    "PATTERNS",
    "RELEASED_INTONATION",
    "STYLES",
    "Calibration",
    "CalibrationError",
    "F0Track",
    "IntonationResult",
    "ProsodyInputError",
    "ProsodyMeasures",
    "assign_levels",
    "classify_intonation",
    "fit_calibration",
    "fit_calibration_from_records",
    "measure_prosody",
    "measures_from_f0",
    "released_intonation",
    "to_semitones",
    "track_f0",
]
