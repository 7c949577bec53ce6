"""Speaker gender: a logistic regression on Whisper encoder embeddings and F0 statistics.

Trained on corpora whose speakers' genders are known (RAVDESS actor parity, EmoDB
speaker list, the demo corpus voices) and evaluated leave-one-speaker-out, so the
reported accuracy is on voices the model never heard. The model is a handful of
numbers (coefficients, intercept, scaler mean/scale), saved as JSON (no pickle),
logged to MLflow and registered as ``emotionthinker-gender``; the ``champion`` alias
moves to a new version only when its unseen-speaker accuracy reaches
``cfg.traits.gender_min_accuracy``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotionthinker.config import Config, ProsodyConfig, TraitsConfig, project_path
from emotionthinker.records import ManifestRecord, read_jsonl

log = logging.getLogger(__name__)

MODEL_NAME = "emotionthinker-gender"
MODEL_FILE = "gender_classifier.json"
FORMAT = "emotionthinker-gender-logreg/1"
CLASSES = ("Female", "Male")  # index 1 is the positive class of the logistic regression
F0_FEATURES = ("f0_median_st", "f0_p10_st", "f0_p90_st", "voiced_fraction")
_LABEL = {"male": "Male", "female": "Female"}


class GenderModelError(RuntimeError):
    """No usable gender model (none registered, unreadable, or built for other features)."""

    reason = "gender_model_unavailable"


class GenderTrainingError(ValueError):
    reason = "gender_training_data"


# -- features ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that defines the feature vector; stored with the weights, so a loaded model rebuilds its own features."""

    encoder: str
    compute_type: str
    max_audio_s: float
    f0_floor_hz: float
    f0_ceiling_hz: float
    f0_hop_s: float
    n_embedding: int = 0
    f0_features: tuple[str, ...] = F0_FEATURES

    @classmethod
    def from_config(cls, traits: TraitsConfig, prosody: ProsodyConfig) -> "FeatureSpec":
        from emotionthinker.traits.embedding import EMBEDDING_COMPUTE_TYPE

        return cls(traits.gender_encoder, EMBEDDING_COMPUTE_TYPE, traits.gender_max_audio_s,
                   prosody.f0_floor_hz, prosody.f0_ceiling_hz, prosody.hop_s)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["f0_features"] = list(self.f0_features)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        return cls(**{**d, "f0_features": tuple(d.get("f0_features", F0_FEATURES))})


def f0_statistics(y16k: np.ndarray, prosody: ProsodyConfig) -> np.ndarray:
    """Median, 10th and 90th percentile F0 in semitones re 100 Hz, and the voiced share of the clip.

    NaN where nothing is voiced (the classifier imputes the training mean).
    """
    from emotionthinker.prosody.f0 import to_semitones, track_f0

    track = track_f0(y16k, 16000, prosody)
    voiced = track.f0_hz[np.isfinite(track.f0_hz)]
    frac = float(voiced.size / max(track.f0_hz.size, 1))
    if voiced.size == 0:
        return np.array([np.nan, np.nan, np.nan, frac])
    st = to_semitones(voiced)
    return np.array([np.median(st), np.percentile(st, 10), np.percentile(st, 90), frac])


class GenderFeatures:
    """y -> [encoder embedding..., F0 statistics...]; the encoder loads once per process."""

    def __init__(self, spec: FeatureSpec, prosody: ProsodyConfig | None = None) -> None:
        from emotionthinker.traits.embedding import EMBEDDING_COMPUTE_TYPE, WhisperEncoderEmbedder

        if spec.compute_type != EMBEDDING_COMPUTE_TYPE:
            raise GenderModelError(f"model features use compute type {spec.compute_type}, this build {EMBEDDING_COMPUTE_TYPE}")
        self.spec = spec
        base = prosody or ProsodyConfig()
        self.prosody = base.model_copy(update={"f0_floor_hz": spec.f0_floor_hz, "f0_ceiling_hz": spec.f0_ceiling_hz,
                                               "hop_s": spec.f0_hop_s})
        self.embed = WhisperEncoderEmbedder(spec.encoder, spec.max_audio_s)

    def __call__(self, y16k: np.ndarray) -> np.ndarray:
        return np.concatenate([self.embed(y16k), f0_statistics(y16k, self.prosody)])


# -- the model -----------------------------------------------------------------------------


@dataclass
class GenderClassifier:
    """Standardise, then logistic regression; P(Male) = sigmoid(coef . z + intercept)."""

    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    spec: FeatureSpec
    metrics: dict[str, Any] = field(default_factory=dict)
    _features: GenderFeatures | None = field(default=None, repr=False)

    def prob_male(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        x = np.where(np.isfinite(x), x, self.mean)  # unmeasurable feature -> training mean (z = 0)
        z = (x - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))

    def predict_features(self, x: np.ndarray) -> list[tuple[str, float]]:
        """(label, probability of that label) per row of features."""
        return [(CLASSES[1], float(p)) if p >= 0.5 else (CLASSES[0], float(1 - p)) for p in self.prob_male(x)]

    def predict_gender(self, y16k: np.ndarray) -> tuple[str, float]:
        """("Male" | "Female", probability of that label) for one 16 kHz clip."""
        if self._features is None:
            self._features = _feature_extractor(json.dumps(self.spec.to_dict(), sort_keys=True))
        return self.predict_features(self._features(y16k))[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "classes": list(CLASSES),
            "coef": self.coef.tolist(),
            "intercept": float(self.intercept),
            "scaler_mean": self.mean.tolist(),
            "scaler_scale": self.scale.tolist(),
            "feature_spec": self.spec.to_dict(),
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "GenderClassifier":
        if d.get("format") != FORMAT or tuple(d.get("classes", ())) != CLASSES:
            raise GenderModelError(f"not a gender model of format {FORMAT}: format={d.get('format')!r}")
        coef, mean, scale = (np.asarray(d[k], dtype=np.float64) for k in ("coef", "scaler_mean", "scaler_scale"))
        if not (coef.shape == mean.shape == scale.shape) or coef.ndim != 1:
            raise GenderModelError("gender model arrays disagree in shape")
        return cls(coef, float(d["intercept"]), mean, scale, FeatureSpec.from_dict(d["feature_spec"]), d.get("metrics", {}))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path


@functools.lru_cache(maxsize=2)
def _feature_extractor(spec_json: str) -> GenderFeatures:
    return GenderFeatures(FeatureSpec.from_dict(json.loads(spec_json)))


def balanced_weights(y: np.ndarray, corpora: np.ndarray) -> np.ndarray:
    """Sample weights giving every (corpus, gender) cell the same total weight.

    A corpus with speakers of one gender only gets weight 0: otherwise the model learns
    "this language/channel means this gender" (seen with 2 RAVDESS actors: holding one
    out left an English = female corpus, and the held-out male actor was called female).
    """
    w = np.zeros(len(y), dtype=np.float64)
    for corpus in np.unique(corpora):
        in_corpus = corpora == corpus
        if len(np.unique(y[in_corpus])) < 2:
            continue
        for label in (0, 1):
            cell = in_corpus & (y == label)
            w[cell] = 1.0 / cell.sum()
    return w * (np.count_nonzero(w) / w.sum()) if w.sum() > 0 else w


def fit_classifier(x: np.ndarray, y: np.ndarray, corpora: np.ndarray, spec: FeatureSpec, c: float,
                   f0_weight: float = 1.0) -> GenderClassifier:
    """Standardised L2 logistic regression on corpus x gender balanced data; y is 1 for Male.

    ``f0_weight`` multiplies the standardised F0 statistics: 4 F0 numbers beside 384
    embedding dimensions would otherwise be shrunk like any one of them. It is folded
    into the stored scale, so the saved model stays "standardise, then dot product".
    """
    from sklearn.linear_model import LogisticRegression

    w = balanced_weights(y, corpora)
    keep = w > 0
    if len(np.unique(y[keep])) < 2:
        raise GenderTrainingError("no corpus in the training data has speakers of both genders")
    x, y, w = x[keep], y[keep], w[keep]
    mean = np.nanmean(x, axis=0)
    x = np.where(np.isfinite(x), x, mean)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    scale[-len(F0_FEATURES):] /= f0_weight
    lr = LogisticRegression(C=c, max_iter=3000).fit((x - mean) / scale, y, sample_weight=w)
    return GenderClassifier(lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), mean, scale, spec)


# -- training data -------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledClip:
    audio_path: str
    speaker: str
    gender: str  # "Male" | "Female"
    corpus: str


def labelled_clips(records: Iterable[dict[str, Any] | ManifestRecord | str | Path]) -> list[LabelledClip]:
    """Clips with a known speaker gender from manifest records or manifest files; others are skipped."""
    out: list[LabelledClip] = []
    for item in records:
        if isinstance(item, (str, Path)):
            out.extend(labelled_clips(read_jsonl(item)))
            continue
        rec = item.model_dump() if isinstance(item, ManifestRecord) else item
        gender = _LABEL.get(str(rec.get("gender", "")).lower())
        if gender and rec.get("speaker"):
            corpus = str(rec.get("corpus", ""))
            speaker = str(rec["speaker"])
            # Speaker ids are only unique within a corpus.
            key = speaker if speaker.startswith(f"{corpus}-") or not corpus else f"{corpus}-{speaker}"
            out.append(LabelledClip(str(rec["audio_path"]), key, gender, corpus))
    return out


def extract_features(clips: Sequence[LabelledClip], features: GenderFeatures, cfg: Config,
                     progress: bool = False) -> tuple[np.ndarray, list[LabelledClip], list[dict[str, str]]]:
    """Feature matrix for the clips that load; the others are returned with their reason."""
    from emotionthinker.audio import AudioError, load_audio
    from emotionthinker.prosody.f0 import ProsodyInputError

    rows, kept, failed = [], [], []
    iterator: Iterable[LabelledClip] = clips
    if progress:
        from tqdm import tqdm

        iterator = tqdm(clips, desc="gender features", unit="clip")
    for clip in iterator:
        try:
            rows.append(features(load_audio(clip.audio_path, cfg.audio)))
            kept.append(clip)
        except (AudioError, ProsodyInputError) as exc:
            failed.append({"audio_path": clip.audio_path, "reason": exc.reason})
    return (np.vstack(rows) if rows else np.zeros((0, 0))), kept, failed


# -- evaluation, training, registration ----------------------------------------------------


@dataclass
class GenderTrainingReport:
    n_clips: int
    n_speakers: int
    per_speaker: dict[str, dict[str, Any]]  # speaker -> gender, n_clips, accuracy (model trained without them)
    mean_unseen_speaker_accuracy: float  # mean over speakers of their clip accuracy
    clip_unseen_accuracy: float  # pooled over every held-out clip
    speaker_majority_accuracy: float  # share of speakers whose clips are mostly labelled right
    failed_clips: list[dict[str, str]] = field(default_factory=list)
    model_path: str = ""
    run_id: str = ""
    registered_version: str = ""
    champion: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"gender classifier: {self.n_clips} clips, {self.n_speakers} speakers, leave-one-speaker-out"]
        for spk, r in sorted(self.per_speaker.items()):
            lines.append(f"  {spk:<14} {r['gender']:<6} n={r['n_clips']:<3} unseen accuracy {r['accuracy']:.3f}"
                         f"  (trained on {', '.join(r['trained_on'])})")
        lines.append(f"  mean unseen-speaker accuracy {self.mean_unseen_speaker_accuracy:.3f}; pooled clips "
                     f"{self.clip_unseen_accuracy:.3f}; speakers mostly right {self.speaker_majority_accuracy:.3f}")
        if self.registered_version:
            lines.append(f"  registered {MODEL_NAME} v{self.registered_version}"
                         + (" as champion" if self.champion else " (below the champion floor; alias unchanged)"))
        return "\n".join(lines)


def leave_one_speaker_out(x: np.ndarray, clips: Sequence[LabelledClip], spec: FeatureSpec, c: float,
                          f0_weight: float = 1.0) -> dict[str, dict[str, Any]]:
    """Per held-out speaker: the accuracy of a model trained on every other speaker."""
    y = np.array([c_.gender == "Male" for c_ in clips], dtype=int)
    speakers = np.array([c_.speaker for c_ in clips])
    corpora = np.array([c_.corpus for c_ in clips])
    out: dict[str, dict[str, Any]] = {}
    for spk in sorted(set(speakers.tolist())):
        test = speakers == spk
        model = fit_classifier(x[~test], y[~test], corpora[~test], spec, c, f0_weight)
        pred = (model.prob_male(x[test]) >= 0.5).astype(int)
        used = balanced_weights(y[~test], corpora[~test]) > 0
        out[spk] = {"gender": CLASSES[int(y[test][0])], "corpus": str(corpora[test][0]), "n_clips": int(test.sum()),
                    "accuracy": round(float(np.mean(pred == y[test])), 4),
                    "trained_on": sorted(set(corpora[~test][used].tolist()))}
    return out


def train_gender_classifier(records: Iterable[dict[str, Any] | ManifestRecord | str | Path], cfg: Config,
                            register: bool = True, out_dir: str | Path | None = None,
                            progress: bool = False) -> GenderTrainingReport:
    """Evaluate leave-one-speaker-out, fit on every speaker, save JSON weights, log and register in MLflow."""
    clips = labelled_clips(records)
    speakers = {c.speaker: c.gender for c in clips}
    if len(speakers) < 3 or len(set(speakers.values())) < 2:
        raise GenderTrainingError(f"need >= 3 speakers of both genders with known gender, got {len(speakers)} "
                                  f"({sorted(set(speakers.values()))})")
    spec = FeatureSpec.from_config(cfg.traits, cfg.prosody)
    features = GenderFeatures(spec, cfg.prosody)
    x, clips, failed = extract_features(clips, features, cfg, progress)
    if len({c.speaker for c in clips}) < 3:
        raise GenderTrainingError(f"only {len({c.speaker for c in clips})} speakers have readable clips ({len(failed)} failed)")
    spec = FeatureSpec(**{**asdict(spec), "n_embedding": x.shape[1] - len(F0_FEATURES)})
    t = cfg.traits
    per_speaker = leave_one_speaker_out(x, clips, spec, t.gender_l2_c, t.gender_f0_weight)
    pooled = sum(r["accuracy"] * r["n_clips"] for r in per_speaker.values()) / sum(r["n_clips"] for r in per_speaker.values())
    report = GenderTrainingReport(
        n_clips=len(clips),
        n_speakers=len(per_speaker),
        per_speaker=per_speaker,
        mean_unseen_speaker_accuracy=round(float(np.mean([r["accuracy"] for r in per_speaker.values()])), 4),
        clip_unseen_accuracy=round(float(pooled), 4),
        speaker_majority_accuracy=round(float(np.mean([r["accuracy"] > 0.5 for r in per_speaker.values()])), 4),
        failed_clips=failed,
    )
    model = fit_classifier(x, np.array([c.gender == "Male" for c in clips], dtype=int),
                           np.array([c.corpus for c in clips]), spec, t.gender_l2_c, t.gender_f0_weight)
    model.metrics = {
        "mean_unseen_speaker_accuracy": report.mean_unseen_speaker_accuracy,
        "clip_unseen_accuracy": report.clip_unseen_accuracy,
        "n_clips": report.n_clips,
        "n_speakers": report.n_speakers,
        "speakers": {s: r["gender"] for s, r in per_speaker.items()},
        "corpora": sorted({c.corpus for c in clips}),
    }
    out_dir = Path(out_dir) if out_dir else cfg.workspace / "models" / "gender"
    report.model_path = str(model.save(out_dir / MODEL_FILE))
    if register:
        _log_and_register(model, report, cfg)
    return report


def _log_and_register(model: GenderClassifier, report: GenderTrainingReport, cfg: Config) -> None:
    from emotionthinker.registry import register_model
    from emotionthinker.tracking import start_stage_run

    params = {"features": model.spec.to_dict(), "l2_c": cfg.traits.gender_l2_c, "f0_weight": cfg.traits.gender_f0_weight,
              "champion_floor": cfg.traits.gender_min_accuracy, "n_clips": report.n_clips,
              "n_speakers": report.n_speakers}
    with start_stage_run(cfg, "train_gender", params=params, run_name="train-gender") as run:
        run.log_metrics({"mean_unseen_speaker_accuracy": report.mean_unseen_speaker_accuracy,
                         "clip_unseen_accuracy": report.clip_unseen_accuracy,
                         "speaker_majority_accuracy": report.speaker_majority_accuracy})
        run.log_metrics({f"unseen_accuracy/{spk}": r["accuracy"] for spk, r in report.per_speaker.items()})
        run.log_table([{"speaker": s, **r} for s, r in sorted(report.per_speaker.items())], "gender_loso.json")
        report.run_id = run.run_id
        report.champion = report.mean_unseen_speaker_accuracy >= cfg.traits.gender_min_accuracy
        with tempfile.TemporaryDirectory() as tmp:  # the registered folder holds the JSON weights and nothing else
            model.save(Path(tmp) / MODEL_FILE)
            report.registered_version = register_model(
                cfg, run.run_id, tmp, MODEL_NAME, alias="champion" if report.champion else None,
                tags={"mean_unseen_speaker_accuracy": str(report.mean_unseen_speaker_accuracy), "format": FORMAT},
                description="Speaker gender: logistic regression on Whisper tiny.en encoder means + F0 statistics "
                            "(JSON weights, no pickle).",
            )
        run.set_tags({"registered_model": f"{MODEL_NAME}/{report.registered_version}", "champion": str(report.champion)})
        log.info("registered %s version %s (champion=%s)", MODEL_NAME, report.registered_version, report.champion)


# -- loading and prediction ----------------------------------------------------------------


def gender_model_identity(cfg: Config) -> str:
    """Which model `traits.gender_model` names right now: a registry alias resolved to its version and run
    (a promotion moves it), a local file by its content, or 'none' when nothing is there."""
    source = cfg.traits.gender_model
    if source.startswith("registry:"):
        from emotionthinker.registry import lookup_model_version
        from models.sources import SourceError

        try:
            mv = lookup_model_version(source, cfg)
        except SourceError:  # nothing registered under it (RegistryLookupError), or not a usable source
            return "none"
        return f"{mv.name}/{mv.version}#{mv.run_id or mv.source}"
    path = _local_model_file(source)
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "none"


def _local_model_file(source: str) -> Path:
    """A file or folder named in the config: relative to the project root, like every config path."""
    path = project_path(source)
    return path / MODEL_FILE if path.is_dir() else path


def load_gender_classifier(cfg: Config) -> GenderClassifier:
    """From the MLflow registry (``registry:NAME@ALIAS`` or ``registry:NAME@VERSION``) or a local JSON file/folder."""
    source = cfg.traits.gender_model
    if source.startswith("registry:"):
        from emotionthinker.registry import RegistryError, RegistryLookupError, resolve_registry_source
        from models.sources import SourceError

        try:
            path = resolve_registry_source(source, cfg) / MODEL_FILE
        except RegistryLookupError:  # the usual case before the first `train-gender`: say only that
            raise GenderModelError(f"no gender model registered as {source} in {cfg.tracking_uri}; train and "
                                   "register one with `emotionthinker train-gender`") from None
        except (SourceError, RegistryError) as exc:
            raise GenderModelError(f"no gender model at {source}: {exc}; train and register one with "
                                   "`emotionthinker train-gender`") from None
    else:
        path = _local_model_file(source)
    if not path.is_file():
        raise GenderModelError(f"gender model not found: {path} (train one with `emotionthinker train-gender`)")
    try:
        return GenderClassifier.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GenderModelError(f"unreadable gender model {path}: {exc}") from None


@functools.lru_cache(maxsize=2)
def _cached_classifier(cfg_json: str) -> GenderClassifier:
    return load_gender_classifier(Config.model_validate_json(cfg_json))


def predict_gender_for_config(y16k: np.ndarray, cfg: Config) -> tuple[str, float]:
    """("Male" | "Female", probability) with the configured model, loaded once per process.

    Raises GenderModelError when no model is registered/found (callers quarantine or use corpus metadata).
    """
    return _cached_classifier(cfg.model_dump_json()).predict_gender(y16k)
