"""Behaviour of the gender classifier on speakers it never heard (real EmoDB and RAVDESS speech)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EMODB_DIR, RAVDESS_DIR, requires_emodb, requires_ravdess


def _records(cfg, corpus: str, root) -> list[dict]:
    from emotionthinker.corpora import build_manifest

    return [r.model_dump() for r in build_manifest(corpus, root, cfg).records]


def _every_nth_per_speaker(records: list[dict], n: int) -> list[dict]:
    by_speaker: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["id"]):
        by_speaker.setdefault(r["speaker"], []).append(r)
    return [r for rs in by_speaker.values() for r in rs[::n]]


@requires_emodb
@requires_ravdess
def test_held_out_speakers_are_mostly_labelled_right(cfg, tmp_path):
    """Train on 8 EmoDB speakers + the RAVDESS actors (a few clips each); two EmoDB speakers stay unheard."""
    from emotionthinker.audio import load_audio
    from emotionthinker.traits.gender import GenderClassifier, train_gender_classifier

    held_out = {"emodb-03": "Male", "emodb-16": "Female"}
    records = _records(cfg, "emodb", EMODB_DIR) + _records(cfg, "ravdess", RAVDESS_DIR)
    train = _every_nth_per_speaker([r for r in records if r["speaker"] not in held_out], 10)
    report = train_gender_classifier(train, cfg, register=False, out_dir=tmp_path)
    assert report.n_speakers == 10 and set(report.per_speaker).isdisjoint(held_out)
    model = GenderClassifier.from_json(json.loads(Path(report.model_path).read_text()))

    correct = total = 0
    for speaker, expected in held_out.items():
        clips = _every_nth_per_speaker([r for r in records if r["speaker"] == speaker], 4)  # all emotions
        labels = [model.predict_gender(load_audio(r["audio_path"]))[0] for r in clips]
        hits = labels.count(expected)
        assert hits > len(labels) / 2, (speaker, labels)  # mostly right, speaker by speaker
        correct, total = correct + hits, total + len(labels)
    assert correct / total >= 0.75


@pytest.mark.slow
@requires_emodb
@requires_ravdess
def test_leave_one_speaker_out_over_all_twelve_speakers(cfg, tmp_path):
    from emotionthinker.traits.gender import train_gender_classifier

    records = _records(cfg, "emodb", EMODB_DIR) + _records(cfg, "ravdess", RAVDESS_DIR)
    report = train_gender_classifier(records, cfg, register=False, out_dir=tmp_path)
    print("\n" + report.summary())
    assert report.n_speakers == 12
    assert report.mean_unseen_speaker_accuracy >= 0.85
    assert report.speaker_majority_accuracy == 1.0  # every unseen speaker mostly right
    assert min(r["accuracy"] for r in report.per_speaker.values()) >= 0.7
    assert np.isclose(report.mean_unseen_speaker_accuracy,
                      np.mean([r["accuracy"] for r in report.per_speaker.values()]), atol=1e-3)
