"""Speaker traits: gender classifier (features, training, JSON weights, MLflow registry) and age."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emotionthinker.traits.age import (
    AGE_LEVELS,
    AgeEstimator,
    AgeModelUnavailableError,
    age_level_from_label,
    age_level_from_years,
    estimate_age,
    estimate_age_for_config,
)
from emotionthinker.traits.gender import (
    CLASSES,
    FeatureSpec,
    GenderClassifier,
    GenderModelError,
    GenderTrainingError,
    balanced_weights,
    fit_classifier,
    labelled_clips,
    load_gender_classifier,
    train_gender_classifier,
)
from tests.conftest import EMODB_DIR, requires_emodb

SPEC = FeatureSpec("packaged:whisper-tiny.en", "int8", 30.0, 55.0, 500.0, 0.01, n_embedding=2)


# -- age -------------------------------------------------------------------------------------


def test_age_bands_and_label_mapping():
    assert [age_level_from_years(y) for y in (8, 15, 25, 45, 70)] == list(AGE_LEVELS)
    mapping = {"20-29": "Young Adult", "age_30s": "Young Adult", "fourties": "Middle-aged", "teens": "Teenager",
               "60+": "Elderly", "senior": "Elderly", "child": "Child", "Middle-aged": "Middle-aged", "male": None}
    assert {k: age_level_from_label(k) for k in mapping} == mapping


def test_age_is_unknown_without_a_usable_model(tmp_path: Path, cfg):
    assert estimate_age_for_config(np.zeros(16000, dtype=np.float32), cfg) == ("unknown", "none")
    est = estimate_age(np.zeros(16000, dtype=np.float32), str(tmp_path / "no-such-model"))
    assert (est.age_level, est.age_source, est.years) == ("unknown", "none", None)
    with pytest.raises(AgeModelUnavailableError):
        AgeEstimator(str(tmp_path / "no-such-model"))


def _tiny_wav2vec2(**extra):
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                          num_conv_pos_embedding_groups=2, **extra)


def test_age_models_load_from_a_folder(tmp_path: Path):
    """Both supported model kinds, as tiny random models saved like hub checkpoints (safetensors)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    from emotionthinker.traits.age import _age_gender_model_class

    torch.manual_seed(0)
    y = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    ag = tmp_path / "age_gender"
    _age_gender_model_class()(_tiny_wav2vec2(architectures=["AgeGenderModel"])).save_pretrained(ag)
    Wav2Vec2FeatureExtractor().save_pretrained(ag)
    est = AgeEstimator(str(ag)).estimate(y)
    assert est.age_source == "model" and est.age_level in AGE_LEVELS and 0 <= est.years <= 100

    labels = {0: "teens", 1: "twenties", 2: "fifties", 3: "seventies"}
    cl = tmp_path / "classifier"
    Wav2Vec2ForSequenceClassification(_tiny_wav2vec2(id2label=labels, label2id={v: k for k, v in labels.items()})).save_pretrained(cl)
    Wav2Vec2FeatureExtractor().save_pretrained(cl)
    estimator = AgeEstimator(str(cl))
    assert estimator.levels == {0: "Teenager", 1: "Young Adult", 2: "Middle-aged", 3: "Elderly"}
    assert estimator.estimate(y).age_level in {"Teenager", "Young Adult", "Middle-aged", "Elderly"}

    no_ages = tmp_path / "no_ages"
    Wav2Vec2ForSequenceClassification(_tiny_wav2vec2(id2label={0: "angry", 1: "calm"}, label2id={"angry": 0, "calm": 1})).save_pretrained(no_ages)
    Wav2Vec2FeatureExtractor().save_pretrained(no_ages)
    with pytest.raises(AgeModelUnavailableError, match="no age labels"):
        AgeEstimator(str(no_ages))


# -- gender: the model itself -----------------------------------------------------------------


def _separable(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features [emb0, emb1, f0_median, f0_p10, f0_p90, voiced]: gender shows in F0, corpus in emb0."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    corpora = np.array(["a"] * (n // 2) + ["b"] * (n // 2))
    f0 = np.where(y == 1, 8.0, 15.0) + rng.normal(0, 1.5, n)
    x = np.column_stack([(corpora == "b") * 3.0 + rng.normal(0, 1, n), rng.normal(0, 1, n), f0, f0 - 5, f0 + 5,
                         rng.uniform(0.3, 0.6, n)])
    return x, y, corpora


def test_balanced_weights_drop_single_gender_corpora():
    y = np.array([1, 1, 0, 1, 1, 1])
    corpora = np.array(["a", "a", "a", "b", "b", "b"])
    w = balanced_weights(y, corpora)
    assert (w[3:] == 0).all()  # corpus b has men only: it would teach "corpus b = male"
    assert w[2] == pytest.approx(2 * w[0])  # the lone woman of corpus a weighs as much as its two men


def test_classifier_learns_and_round_trips_through_json(tmp_path: Path):
    x, y, corpora = _separable()
    model = fit_classifier(x, y, corpora, SPEC, c=1.0, f0_weight=5.0)
    pred = model.prob_male(x) >= 0.5
    assert np.mean(pred == y) > 0.9
    label, prob = model.predict_features(x[:1])[0]
    assert label in CLASSES and 0.5 <= prob <= 1.0
    x_nan = x[:3].copy()
    x_nan[:, 2:5] = np.nan  # unvoiced clip: F0 statistics impute the training mean
    assert np.isfinite(model.prob_male(x_nan)).all()

    path = model.save(tmp_path / "m.json")
    text = path.read_text()
    assert json.loads(text)["format"].startswith("emotionthinker-gender")
    loaded = GenderClassifier.from_json(json.loads(text))
    assert np.allclose(loaded.prob_male(x), model.prob_male(x))
    assert loaded.spec == SPEC
    with pytest.raises(GenderModelError):
        GenderClassifier.from_json({**json.loads(text), "format": "pickle"})
    with pytest.raises(GenderTrainingError):
        fit_classifier(x, np.ones_like(y), corpora, SPEC, c=1.0)


def test_labelled_clips_from_manifests(tmp_path: Path):
    recs = [
        {"audio_path": "a.wav", "speaker": "ravdess-01", "gender": "male", "corpus": "ravdess"},
        {"audio_path": "b.wav", "speaker": "7", "gender": "Female", "corpus": "demo"},
        {"audio_path": "c.wav", "speaker": "x", "gender": "unknown", "corpus": "meld"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    clips = labelled_clips([manifest])
    assert [(c.speaker, c.gender) for c in clips] == [("ravdess-01", "Male"), ("demo-7", "Female")]


def test_loading_a_missing_local_model_fails_clearly(cfg, tmp_path: Path):
    cfg.traits.gender_model = str(tmp_path / "nothing.json")
    with pytest.raises(GenderModelError, match="not found"):
        load_gender_classifier(cfg)
    (tmp_path / "bad.json").write_text("{not json")
    cfg.traits.gender_model = str(tmp_path / "bad.json")
    with pytest.raises(GenderModelError, match="unreadable"):
        load_gender_classifier(cfg)


# -- gender: training on real speech, leave-one-speaker-out, MLflow registry --------------------


def _emodb_subset(cfg, per_speaker: int, speakers: tuple[str, ...]) -> list[dict]:
    from emotionthinker.corpora import build_manifest

    recs = [r.model_dump() for r in build_manifest("emodb", EMODB_DIR, cfg).records]
    out, seen = [], {}
    for r in sorted(recs, key=lambda r: r["id"]):
        spk = r["speaker"].split("-")[-1]
        if spk in speakers and seen.get(spk, 0) < per_speaker:
            out.append(r)
            seen[spk] = seen.get(spk, 0) + 1
    return out


@requires_emodb
def test_train_register_promote_and_load(cfg, mlflow_store_template: Path):
    import shutil

    from mlflow import MlflowClient

    from emotionthinker.audio import load_audio
    from emotionthinker.traits.gender import MODEL_NAME, _log_and_register, predict_gender_for_config

    with pytest.raises(GenderModelError, match="train-gender"):
        load_gender_classifier(cfg)  # no registry at all yet in this fresh workspace
    store = Path(cfg.tracking_uri.removeprefix("sqlite:///"))
    store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_store_template, store)  # a migrated empty store: saves ~6 s of MLflow migrations
    with pytest.raises(GenderModelError, match="train-gender"):
        load_gender_classifier(cfg)  # a registry without the model

    speakers = ("03", "10", "11", "08", "09", "13")  # 3 men, 3 women
    records = _emodb_subset(cfg, per_speaker=3, speakers=speakers)
    cfg.traits.gender_min_accuracy = 0.0
    report = train_gender_classifier(records, cfg)
    assert report.n_speakers == 6 and report.n_clips == 18
    assert set(report.per_speaker) == {f"emodb-{s}" for s in speakers}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_clips"] == 3 for r in report.per_speaker.values())
    assert report.mean_unseen_speaker_accuracy == pytest.approx(
        np.mean([r["accuracy"] for r in report.per_speaker.values()]), abs=1e-3)
    assert report.registered_version == "1" and report.champion

    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    champion = lambda: str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)  # noqa: E731
    assert champion() == "1"
    run = client.get_run(report.run_id)
    assert run.data.metrics["mean_unseen_speaker_accuracy"] == pytest.approx(report.mean_unseen_speaker_accuracy)

    model = load_gender_classifier(cfg)  # registry:emotionthinker-gender@champion
    assert model.metrics["n_speakers"] == 6 and model.spec.n_embedding == 384
    label, prob = predict_gender_for_config(load_audio(EMODB_DIR / "16a01Fc.wav"), cfg)  # speaker 16: unseen
    assert label in CLASSES and 0.5 <= prob <= 1.0

    # A new version below the floor is registered but the champion alias stays where it was.
    cfg.traits.gender_min_accuracy = 0.9
    report.mean_unseen_speaker_accuracy = 0.5
    model.intercept += 0.01  # other weights: the same ones would be version 1 again (registry.py)
    _log_and_register(model, report, cfg)
    assert report.registered_version == "2" and not report.champion and champion() == "1"
    report.mean_unseen_speaker_accuracy = 0.95
    model.intercept += 0.01
    _log_and_register(model, report, cfg)
    assert report.registered_version == "3" and report.champion and champion() == "3"
    _log_and_register(model, report, cfg)  # the same weights once more: no version 4
    assert report.registered_version == "3" and champion() == "3"
    cfg.traits.gender_model = "registry:emotionthinker-gender@2"  # a version number works too
    assert load_gender_classifier(cfg).metrics["n_clips"] == 18
