"""Offline composer: grounded, never contradicting, label only at the end, varied, deterministic."""

from __future__ import annotations

import itertools
import random

import pytest

from emotionthinker.cot import lexicon as lx
from emotionthinker.cot.checks import (
    check_response,
    fact_check,
    sentence_skeleton,
    sentences_naming_label,
    split_sentences,
    word_count,
)
from emotionthinker.cot.offline import NO_TRANSCRIPT, compose, fix_articles
from emotionthinker.labels import LABELS

TRANSCRIPTS = ["Kids are talking by the door.", "Is it raining outside?", "No", "I told you the meeting moved to Thursday"]


def make_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ann = {
            "pitch_level": rng.choice(["low", "normal", "high"]),
            "energy_level": rng.choice(["low", "normal", "high"]),
            "speed_level": rng.choice(["slow", "normal", "fast"]),
            "stressed_words": rng.choice([[], ["door"], ["kids", "door"], ["Thursday"]]),
            "intonation": rng.choice(list(lx.INTONATIONS) + ["uncertain", "too_short"]),
            "gender": rng.choice(["Male", "Female"]),
            "age_level": rng.choice(list(lx.AGE_LEVELS) + ["unknown"]),
        }
        out.append({"id": f"rec-{i}", "emotion": LABELS[i % len(LABELS)], "transcription": rng.choice(TRANSCRIPTS),
                    "annotations": ann, "prosody": {"calibration": {"pitch": "c/female"}}})
    return out


RECORDS = make_records(120)


def expected_attributes(rec: dict) -> set[str]:
    ann = rec["annotations"]
    exp = {"pitch_level", "energy_level", "speed_level", "gender", "transcript"}
    if ann["intonation"] in lx.INTONATIONS:
        exp.add("intonation")
    if ann["stressed_words"]:
        exp.add("stressed_words")
    if ann["age_level"] != "unknown":
        exp.add("age_level")
    return exp


def test_composer_never_contradicts_and_states_exactly_the_available_cues():
    for rec in RECORDS:
        text = compose(rec).text
        fc = fact_check(text, rec)
        bad = [(v.claim.attribute, v.claim.surface, v.status) for v in fc.verdicts if v.status != "supported"]
        assert not bad, (rec["annotations"], text)
        assert fc.attributes_mentioned == expected_attributes(rec), text


def test_skips_undetermined_cues():
    rec = dict(RECORDS[0])
    rec["annotations"] = {**rec["annotations"], "intonation": "too_short", "stressed_words": [], "age_level": "unknown"}
    text = compose(rec).text.lower()
    for word in ("intonation", "contour", "melody", "stress", "emphasis", "young", "elderly", "middle-aged", "teenage"):
        assert word not in text, word


def test_label_appears_only_in_the_conclusion_and_checks_pass():
    for rec in RECORDS:
        text = compose(rec).text
        n = len(split_sentences(text))
        assert sentences_naming_label(text, rec["emotion"]) == [n - 1], text
        assert check_response(text, rec) == [], text
        assert 50 <= word_count(text) <= 200


def test_deterministic_per_record_and_seed():
    rec = RECORDS[3]
    assert compose(rec).text == compose(dict(rec)).text
    assert compose(rec, seed=1).text != compose(rec, seed=0).text
    assert compose(RECORDS[3]).text != compose({**rec, "id": "other"}).text


def test_many_sentence_structures():
    skeletons, openings = set(), set()
    for rec in RECORDS[:60]:
        for s in split_sentences(compose(rec).text):
            sk = sentence_skeleton(s.text)
            skeletons.add(sk)
            openings.add(" ".join(sk.split()[:3]))
    assert len(skeletons) >= 60 and len(openings) >= 20


def test_no_transcription_is_handled():
    rec = {**RECORDS[1], "transcription": ""}
    text = compose(rec).text
    assert NO_TRANSCRIPT in text and check_response(text, rec) == []
    assert "transcript" not in fact_check(text, rec).attributes_mentioned


@pytest.mark.parametrize("label", LABELS)
def test_every_label_concludes(label):
    rec = {**RECORDS[2], "emotion": label}
    text = compose(rec).text
    assert set(lx.LABEL_FORMS[label]) & set(split_sentences(text)[-1].text.lower().replace(".", "").split())


def test_article_agreement():
    assert fix_articles("a elderly man and an fast pace, A unhurried tempo") == \
        "an elderly man and a fast pace, An unhurried tempo"


def test_all_gender_age_combinations_are_consistent():
    base = RECORDS[5]
    for gender, age in itertools.product(lx.GENDERS, list(lx.AGE_LEVELS) + ["unknown"]):
        rec = {**base, "id": f"g-{gender}-{age}", "annotations": {**base["annotations"], "gender": gender, "age_level": age}}
        assert fact_check(compose(rec).text, rec).ok
