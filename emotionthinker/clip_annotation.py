"""Pass 1 of the annotation: every measurement of one clip, or the clip's quarantine record.

This module, with audio, prosody and traits, is the "measuring code" whose digest an annotation output
records in its resume settings (annotate.measure_code_digest): an edit here measures every clip again on
the next run, while edits to the orchestration in annotate.py (resume, pool, locks, pass 2) keep them.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from emotionthinker.audio import AudioError, load_audio
from emotionthinker.config import Config
from emotionthinker.prosody.f0 import ProsodyInputError
from emotionthinker.prosody.intonation import released_intonation
from emotionthinker.prosody.measures import measure_prosody
from emotionthinker.records import QuarantineRecord

log = logging.getLogger(__name__)
STAGE = "annotate"
_GENDER_NAMES = {"male": "Male", "female": "Female"}


def measure_record(record: dict[str, Any], cfg: Config, use_asr: bool = True) -> dict[str, Any]:
    """Every measurement of one clip; raises AudioError/ProsodyInputError for unusable clips."""
    from emotionthinker.prosody.asr import get_transcriber
    from emotionthinker.prosody.stress import build_stress_detector, stressed_words

    sr = cfg.audio.sample_rate
    y = load_audio(record["audio_path"], cfg.audio)
    m = measure_prosody(y, sr, cfg.prosody)
    out = dict(record)
    prosody = m.to_record()
    text = (record.get("transcription") or "").strip()
    words: list[Any] = []
    if text:
        out["transcription_source"] = "corpus"
        if use_asr:
            words = get_transcriber(cfg.asr).align_known_text(y, text, record.get("language")).words
    elif use_asr:
        tr = get_transcriber(cfg.asr).transcribe(y)
        out["transcription"], out["transcription_source"] = tr.text, "asr"
        words = tr.words
    else:
        out["transcription_source"] = "none"
    stressed: list[str] = []
    if words:
        prominences = build_stress_detector(cfg.asr, cfg.prosody).detect(y, sr, words, (m.f0_times, m.f0_hz))
        prosody["words"] = [p.to_dict() for p in prominences]
        stressed = stressed_words(prominences)
    out["stress_source"] = cfg.asr.stress_detector if words else "none"
    gender, gender_source = _speaker_gender(record, y, cfg)
    age, age_source = _speaker_age(y, cfg)
    out["prosody"] = prosody
    out["gender_source"], out["age_source"] = gender_source, age_source
    # Levels come in pass 2; everything measured per clip is final here.
    out["annotations"] = {
        "stressed_words": stressed,
        "intonation": released_intonation(m.intonation.style, m.intonation.pattern, cfg.prosody),
        "gender": gender,
        "age_level": age,
    }
    return out


def _speaker_gender(record: dict[str, Any], y, cfg: Config) -> tuple[str, str]:
    known = _GENDER_NAMES.get(str(record.get("gender", "")).lower())
    if known:
        return known, "corpus"
    from emotionthinker.traits.gender import predict_gender_for_config

    label, _prob = predict_gender_for_config(y, cfg)
    return label, "classifier"


def _speaker_age(y, cfg: Config) -> tuple[str, str]:
    from emotionthinker.traits.age import estimate_age_for_config

    return estimate_age_for_config(y, cfg)


def quarantine_record(record: dict[str, Any], reason: str, error_type: str, detail: str) -> dict[str, Any]:
    return QuarantineRecord(
        id=record.get("id", "?"),
        audio_path=record.get("audio_path", "?"),
        stage=STAGE,
        reason=reason,
        error_type=error_type,
        detail=detail,
    ).model_dump(mode="json")


def measure_or_quarantine(record: dict[str, Any], cfg: Config, use_asr: bool) -> tuple[str, dict[str, Any]]:
    try:
        return "ok", measure_record(record, cfg, use_asr)
    except (AudioError, ProsodyInputError) as exc:
        return "quarantine", quarantine_record(record, exc.reason, type(exc).__name__, str(exc))
    except Exception as exc:  # one broken clip must not stop a 35K-clip batch; the reason is kept
        log.exception("annotating %s failed", record.get("id"))
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        # Model errors (ASR, stress, gender) carry a reason code of their own, e.g. gender_model_unavailable.
        reason = getattr(exc, "reason", None) or "annotator_error"
        return "quarantine", quarantine_record(record, str(reason), type(exc).__name__, detail)
