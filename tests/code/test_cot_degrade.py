"""Reward-model tuples: score design, per-criterion degradations and their independence."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from emotionthinker.cot import build_rm_tuples, score_histogram
from emotionthinker.cot import lexicon as lx
from emotionthinker.cot.checks import fact_check, parse_claims, split_sentences
from emotionthinker.cot.degrade import (
    DEGRADERS,
    changed_criteria,
    claim_signature,
    criterion_signals,
    degrade,
    level_for,
    score_vectors,
    units_for,
)
from emotionthinker.cot.offline import compose, record_rng
from emotionthinker.cot.prompt import CRITERIA
from emotionthinker.labels import LABELS


def gold_records(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ann = {
            "pitch_level": rng.choice(["low", "normal", "high"]),
            "energy_level": rng.choice(["low", "normal", "high"]),
            "speed_level": rng.choice(["slow", "normal", "fast"]),
            "stressed_words": rng.choice([[], ["door"], ["kids", "talking"]]),
            "intonation": rng.choice(list(lx.INTONATIONS) + ["uncertain"]),
            "gender": rng.choice(lx.GENDERS),
            "age_level": rng.choice(list(lx.AGE_LEVELS) + ["unknown"]),
        }
        rec = {"id": f"g{i:03d}", "audio_path": f"/a/{i}.wav", "emotion": LABELS[i % 9], "annotations": ann,
               "transcription": rng.choice(["Kids are talking by the door.", "Dogs are sitting by the door."]),
               "split": "train"}
        rec["reasoning"] = compose(rec).text
        out.append(rec)
    return out


GOLD = gold_records(27)


def test_score_vectors_cover_every_level_equally():
    vecs = score_vectors(500, random.Random(0))
    for c in CRITERIA:
        assert Counter(v[c] for v in vecs) == {lv: 100 for lv in range(1, 6)}
    assert all(any(v[c] < 5 for c in CRITERIA) for v in vecs)  # never the gold vector
    for v in vecs:  # a one-sentence text is either right or wrong about what it says
        if v["caption_completeness"] == 1:
            assert v["factual_alignment"] in (1, 5) and v["interpretative_quality"] in (1, 5)


@pytest.mark.parametrize("n", [4, 5, 8])
def test_unit_counts_reach_every_level(n):
    assert [level_for(units_for(lv, n), n) for lv in (5, 4, 3, 2, 1)] == [5, 4, 3, 2, 1]
    assert level_for(0, n) == 5 and level_for(n, n) == 1


@pytest.mark.parametrize("criterion", CRITERIA)
def test_each_degradation_changes_its_own_evidence_only(criterion):
    fn = DEGRADERS[criterion]
    for rec in GOLD:
        gold = rec["reasoning"]
        for level in (1, 2, 3, 4):
            step = fn(gold, rec, level, record_rng(rec["id"], 0, f"{criterion}{level}"))
            assert step.level < 5 and step.ops, (criterion, level, gold)
            assert changed_criteria(gold, step.text, rec) == {criterion}, (level, step.ops, gold, step.text)


def test_more_damage_for_lower_levels():
    for rec in GOLD[:12]:
        gold = rec["reasoning"]
        n_sent = len(split_sentences(gold))
        contradicted = [fact_check(DEGRADERS["factual_alignment"](gold, rec, lv, record_rng(rec["id"])).text, rec)
                        .n_contradicted for lv in (4, 3, 2, 1)]
        assert contradicted == sorted(contradicted) and contradicted[0] >= 1
        kept = [len(split_sentences(DEGRADERS["caption_completeness"](gold, rec, lv, record_rng(rec["id"])).text))
                for lv in (4, 3, 2, 1)]
        assert kept == sorted(kept, reverse=True) and kept[0] < n_sent
        broken = [criterion_signals(DEGRADERS["interpretative_quality"](gold, rec, lv, record_rng(rec["id"])).text, rec)
                  ["interpretative_quality"][0] for lv in (4, 3, 2, 1)]
        assert broken[-1] >= broken[0]


def test_factual_swaps_keep_the_cues_and_fluency_keeps_the_claims():
    rec = GOLD[0]
    gold = rec["reasoning"]
    fact = DEGRADERS["factual_alignment"](gold, rec, 1, record_rng("x")).text
    before = Counter(c.attribute for c in parse_claims(gold, rec["transcription"]))
    after = Counter(c.attribute for c in parse_claims(fact, rec["transcription"]))
    assert before == after  # same cues mentioned, now with wrong values
    flu = DEGRADERS["fluency_and_structural_clarity"](gold, rec, 1, record_rng("x")).text
    assert claim_signature(flu, rec["transcription"]) == claim_signature(gold, rec["transcription"]) and flu != gold


def test_combined_variant_reports_reached_scores():
    rec = GOLD[4]
    target = {"factual_alignment": 2, "interpretative_quality": 4, "caption_completeness": 3,
              "fluency_and_structural_clarity": 1}
    v = degrade(rec["reasoning"], rec, target, record_rng(rec["id"]))
    assert v.requested == target and set(v.scores) == set(CRITERIA)
    assert all(1 <= s <= 5 for s in v.scores.values()) and v.text != rec["reasoning"]
    assert all(v.operations[c] for c in CRITERIA)


def test_reported_scores_are_the_damage_done_not_the_request():
    """Completeness runs first, on the gold text: its score must follow from the sentences it dropped.
    Short texts cannot reach every requested level, so some variants must report a different score."""
    from emotionthinker.cot.degrade import _conclusion_index, level_for

    differs = 0
    for rec in GOLD:
        gold = rec["reasoning"]
        units = sorted({c.sentence for c in parse_claims(gold, rec["transcription"])} - {_conclusion_index(gold, rec["emotion"])})
        for level in range(1, 5):
            target = {c: 5 for c in CRITERIA} | {"caption_completeness": level, "factual_alignment": level}
            v = degrade(gold, rec, target, record_rng(f"{rec['id']}-{level}"))
            dropped = [op for op in v.operations["caption_completeness"] if op.startswith("drop_sentence:")]
            assert v.scores["caption_completeness"] == level_for(len(dropped), max(1, len(units) - 1)), (rec["id"], level)
            differs += v.scores != v.requested
    assert differs > 0


def test_rm_tuples_cover_every_level_and_are_deterministic(cfg):
    cfg.rm_data.variants_per_record = 5
    tuples = build_rm_tuples(GOLD, cfg)
    assert len(tuples) == len(GOLD) * 6
    gold = [t for t in tuples if t["kind"] == "gold"]
    assert all(t["g"] == {c: 5 for c in CRITERIA} and t["r"] for t in gold)
    hist = score_histogram([t for t in tuples if t["kind"] != "gold"])  # the gold tuples alone fill level 5
    for c in CRITERIA:
        assert all(hist[c][lv] >= 0.1 * len(GOLD) for lv in range(1, 6)), (c, hist[c])
    assert build_rm_tuples(GOLD[:3], cfg) == [t for t in tuples if t["record_id"] in {r["id"] for r in GOLD[:3]}]
    assert tuples[1]["q"]["prompt"].startswith("<audio>What is the emotion")


_HASH_SEED_SCRIPT = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
from test_cot_degrade import gold_records
from emotionthinker.config import load_config
from emotionthinker.cot import build_rm_tuples
from emotionthinker.cot.offline import compose
recs = gold_records(18, seed=7)
for r in recs:  # a quote whose longest content words tie ("smells", "rotten", "eating")
    r["transcription"] = "Ugh, this soup smells rotten, I am not eating that."
    r["reasoning"] = compose(r).text
tuples = build_rm_tuples(recs, load_config("test"))
print(hashlib.sha1(json.dumps(tuples, sort_keys=True).encode()).hexdigest())
"""


def test_rm_tuples_do_not_depend_on_the_hash_seed():
    # Each CLI run is a new process with its own string-hash seed; the tuples (and their DVC hash) must not move.
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = str(Path(__file__).parent)
    digests = {
        subprocess.run([sys.executable, "-c", _HASH_SEED_SCRIPT, here], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2", "3", "4")
    }  # fmt: skip
    assert len(digests) == 1, digests
