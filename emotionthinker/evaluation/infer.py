"""Single-clip inference: the clip's prosody annotation, then the model's reasoning and answer.

Annotation is the annotate stage's (emotionthinker/annotate.py) for one clip: Praat F0, energy and
syllable rate, intonation contour, ASR transcript with word timings and stress, speaker gender (the
registered classifier when there is one) and age (when an age model is configured). Levels need a
calibration: the newest one an annotate run wrote under <data>/annotated/, else the reference one
(prosody/reference_calibration.json: tertiles over the RAVDESS and EmoDB clips of the shared data,
global and per gender, see its "source"). A single clip has no corpus of its own, so the global groups
apply, which is why a level printed here is relative to acted emotional speech in general.

Default model: `emotionthinker-policy@champion`; else the newest `challenger` among the policy and
base models; else a NoModelError that says how to get one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotionthinker.config import Config
from emotionthinker.prosody.levels import REFERENCE_CALIBRATION
from emotionthinker.stored_paths import absolute_path

log = logging.getLogger(__name__)

CHAMPION_MODEL = "emotionthinker-policy"
CHALLENGER_MODELS = ("emotionthinker-policy", "emotionthinker-base")
INFER_CORPUS = "infer"  # a corpus name no calibration fits, so the global groups apply


class NoModelError(LookupError):
    """No model given and none registered to default to."""


def default_model_source(cfg: Config) -> str:
    """registry:emotionthinker-policy@champion, else the newest challenger (policy or base)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from emotionthinker.services import local_path

    hint = ("no model to run: nothing is registered as emotionthinker-policy@champion or @challenger "
            "(or emotionthinker-base@challenger) in " + cfg.tracking_uri + ". Train one (`emotionthinker train sft`, "
            "`emotionthinker train grpo`) or pass --model, e.g. --model packaged:tiny-base (the untrained base).")  # fmt: skip
    store = local_path(cfg.tracking_uri) if cfg.tracking_uri.startswith("sqlite:///") else None
    if store is not None and not store.is_file():
        raise NoModelError(hint)
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)

    def by_alias(name: str, alias: str):
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    if by_alias(CHAMPION_MODEL, "champion") is not None:
        return f"registry:{CHAMPION_MODEL}@champion"
    challengers = [(mv.creation_timestamp, name) for name in CHALLENGER_MODELS if (mv := by_alias(name, "challenger"))]
    if not challengers:
        raise NoModelError(hint)
    return f"registry:{max(challengers)[1]}@challenger"


def fit_reference_calibration(manifests: list[Path], cfg: Config, out: Path = REFERENCE_CALIBRATION) -> Path:
    """Refit reference_calibration.json from manifests (global groups only; corpus groups are dropped)."""
    import json

    from emotionthinker.audio import AudioError, load_audio
    from emotionthinker.prosody.f0 import ProsodyInputError
    from emotionthinker.prosody.levels import GLOBAL, fit_calibration
    from emotionthinker.prosody.measures import measure_prosody
    from emotionthinker.records import iter_jsonl

    triples, sources = [], []
    for manifest in manifests:
        n = 0
        for rec in iter_jsonl(manifest):
            try:
                m = measure_prosody(load_audio(rec["audio_path"], cfg.audio), cfg.audio.sample_rate, cfg.prosody)
            except (AudioError, ProsodyInputError):
                continue
            triples.append((rec["corpus"], rec.get("gender") or "unknown", m.to_record()))
            n += 1
        sources.append(f"{Path(manifest).name}: {n} clips")
    calib = fit_calibration(triples, cfg)
    calib.groups = {a: {k: t for k, t in g.items() if k == GLOBAL or k.startswith(GLOBAL + "/")} for a, g in calib.groups.items()}
    payload = json.loads(calib.to_json())
    payload["source"] = ("Tertiles of the annotate stage's measures (Praat, default prosody settings) over "
                         + "; ".join(sources) + ", pooled over both corpora (global) and per speaker gender from the corpus metadata (global/<gender>); RAVDESS actors 01-02 and the processed 2 s EmoDB copy of ../shared/data.")  # fmt: skip
    out.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return out


def newest_annotate_calibration(cfg: Config) -> Path | None:
    folder = cfg.data_dir / "annotated"
    found = sorted(folder.rglob("*.calibration.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return found[-1] if found else None


def load_calibration(cfg: Config, path: str | Path | None = None):
    """(Calibration, where it came from): explicit path, newest annotate calibration, or the reference."""
    from emotionthinker.prosody.levels import Calibration

    chosen = Path(path) if path else newest_annotate_calibration(cfg) or REFERENCE_CALIBRATION
    return Calibration.load(chosen), chosen


@dataclass
class ClipAnnotation:
    record: dict[str, Any]  # annotated-record layout (annotations + prosody)
    calibration: Path
    notes: list[str] = field(default_factory=list)  # what could not be determined, and why


def annotate_clip(path: str | Path, cfg: Config, use_asr: bool = True, gender: str | None = None,
                  calibration: str | Path | None = None) -> ClipAnnotation:  # fmt: skip
    """Measure and label one clip like the annotate stage; missing models degrade to 'unknown' with a note."""
    from emotionthinker.audio import load_audio
    from emotionthinker.prosody.intonation import released_intonation
    from emotionthinker.prosody.levels import assign_levels
    from emotionthinker.prosody.measures import measure_prosody

    notes: list[str] = []
    sr = cfg.audio.sample_rate
    path = absolute_path(path)  # a clip named on the command line is relative to the cwd, not the project
    y = load_audio(path, cfg.audio)
    m = measure_prosody(y, sr, cfg.prosody)
    prosody = m.to_record()
    record: dict[str, Any] = {"id": Path(path).stem, "audio_path": str(path), "corpus": INFER_CORPUS,
                              "transcription": "", "transcription_source": "none"}  # fmt: skip
    stressed: list[str] = []
    if use_asr:
        try:
            from emotionthinker.prosody.asr import get_transcriber
            from emotionthinker.prosody.stress import build_stress_detector, stressed_words

            tr = get_transcriber(cfg.asr).transcribe(y)
            record["transcription"], record["transcription_source"] = tr.text, "asr"
            if tr.words:
                prominences = build_stress_detector(cfg.asr, cfg.prosody).detect(y, sr, tr.words, (m.f0_times, m.f0_hz))
                prosody["words"] = [p.to_dict() for p in prominences]
                stressed = stressed_words(prominences)
        except Exception as exc:  # noqa: BLE001 - an ASR problem must not hide the prosody
            notes.append(f"no transcript ({type(exc).__name__}: {exc})")
    gender_label, gender_source = _gender(y, cfg, gender, notes)
    from emotionthinker.traits.age import estimate_age_for_config

    age, age_source = estimate_age_for_config(y, cfg)
    if age == "unknown":
        notes.append("age not determined (no age model configured: traits.age_model)")
    calib, calib_path = load_calibration(cfg, calibration)
    levels, used = assign_levels(prosody, INFER_CORPUS, gender_label.lower() if gender_label != "unknown" else "unknown", calib)
    if levels.get("pitch_level") is None:
        levels["pitch_level"] = "unknown"
        notes.append("no voiced speech: pitch level unknown")
    for key, value in list(levels.items()):
        if value is None:
            levels[key] = "unknown"
    record["gender"] = gender_label.lower() if gender_label != "unknown" else "unknown"
    record["prosody"] = {**prosody, "calibration": used}
    record["annotations"] = {**levels, "stressed_words": stressed,
                             "intonation": released_intonation(m.intonation.style, m.intonation.pattern, cfg.prosody),
                             "gender": gender_label, "age_level": age}  # fmt: skip
    record["gender_source"], record["age_source"] = gender_source, age_source
    record["duration_s"] = prosody.get("duration_s")
    return ClipAnnotation(record, calib_path, notes)


def _gender(y: np.ndarray, cfg: Config, given: str | None, notes: list[str]) -> tuple[str, str]:
    if given:
        return given.capitalize(), "given"
    from emotionthinker.traits.gender import GenderModelError, predict_gender_for_config

    try:
        label, prob = predict_gender_for_config(y, cfg)
        return label, f"classifier (p={prob:.2f})"
    except GenderModelError as exc:  # no registered classifier: its message says what to do
        notes.append(f"gender not determined: {exc}; or pass --gender")
    except Exception as exc:  # noqa: BLE001 - a broken classifier must not stop the answer
        notes.append(f"gender not determined ({type(exc).__name__}: {exc}); pass --gender")
    return "unknown", "none"


@dataclass
class Inference:
    annotation: ClipAnnotation
    model_source: str
    output: str
    reasoning: str
    answer: str | None
    label: str | None
    format_ok: bool


def infer_clip(path: str | Path, cfg: Config, model_source: str | None = None, use_asr: bool = True,
               gender: str | None = None, calibration: str | Path | None = None, lm=None) -> Inference:  # fmt: skip
    """Annotate the clip and ask the model (default_model_source when none is given)."""
    from emotionthinker.audio import load_audio
    from emotionthinker.cot.checks import clean_response
    from emotionthinker.labels import normalize_label
    from models.backbone import AudioLM
    from models.rewards import extract_answer, format_reward

    source = model_source or default_model_source(cfg)
    path = absolute_path(path)
    annotation = annotate_clip(path, cfg, use_asr, gender, calibration)
    lm = lm or AudioLM.from_source(source, cfg)
    text = lm.generate([load_audio(path, cfg.audio)], max_new_tokens=cfg.eval.max_new_tokens or cfg.models.max_new_tokens).texts[0]
    answer = extract_answer(text)
    return Inference(annotation, source, text, clean_response(text), answer, normalize_label(answer), bool(format_reward(text)))


def _num(value: Any, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def format_inference(inf: Inference) -> str:
    """What `emotionthinker infer` prints."""
    rec, ann, pro = inf.annotation.record, inf.annotation.record["annotations"], inf.annotation.record["prosody"]
    cal = pro.get("calibration", {})
    lines = [
        f"clip: {rec['audio_path']} ({_num(pro.get('duration_s'), '.2f', ' s')})",
        f"transcription ({rec['transcription_source']}): " + (f'"{rec["transcription"]}"' if rec["transcription"] else "-"),
        f"speaker: gender {ann['gender']} ({rec['gender_source']}), age {ann['age_level']} ({rec['age_source']})",
        f"prosody (levels calibrated by {inf.annotation.calibration}):",
        f"  pitch       {ann['pitch_level']:<8} median F0 {_num(pro.get('f0_median_hz'), '.1f', ' Hz')} "
        f"({_num(pro.get('f0_median_st'), '.1f', ' st re 100 Hz')}), range {_num(pro.get('f0_range_st'), '.1f', ' st')}; group {cal.get('pitch', '?')}",
        f"  energy      {ann['energy_level']:<8} {_num(pro.get('rms_dbfs'), '.1f', ' dBFS')} over speech; group {cal.get('energy', '?')}",
        f"  speed       {ann['speed_level']:<8} {_num(pro.get('articulation_rate_sps'), '.2f', ' syllables/s')} of speech; group {cal.get('speed', '?')}",
        f"  intonation  {ann['intonation']:<8} (style {pro.get('intonation_style')}, pattern {pro.get('intonation_pattern')})",
        f"  stressed words: {', '.join(ann['stressed_words']) or '-'}",
    ]  # fmt: skip
    lines += [f"  note: {n}" for n in inf.annotation.notes]
    lines += [
        f"model: {inf.model_source}",
        f"reasoning: {inf.reasoning or '-'}",
        f"answer: {inf.answer if inf.answer is not None else '-'}"
        + (f" -> {inf.label}" if inf.label and inf.label != inf.answer else "")
        + ("" if inf.label else " (not one of the nine labels)")
        + ("" if inf.format_ok else "  [output not in <think>..</think><answer>..</answer> format]"),
    ]
    return "\n".join(lines)
