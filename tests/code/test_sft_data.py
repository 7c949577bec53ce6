"""Prosody-centric SFT corpus on real (espeak-ng) speech: task families, targets, splits, augmentation checks.

The demo corpus (test profile: 18 clips, 4 s audio window) is synthesised and
annotated once per module: measure_prosody + a fitted calibration give the
levels; stressed words and CoT records are set explicitly, so every expected
target is known independently of the builder.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotionthinker.audio import load_audio
from emotionthinker.config import PROJECT_ROOT, ConfigError, load_config
from emotionthinker.corpora import build_manifest
from emotionthinker.democorpus import synthesize_demo_corpus
from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT
from emotionthinker.prosody.intonation import released_intonation
from emotionthinker.prosody.levels import assign_levels, fit_calibration_from_records
from emotionthinker.prosody.measures import measure_prosody
from emotionthinker.records import read_jsonl
from emotionthinker.sft_data import TASKS, build_sft_corpus, max_clip_seconds
from emotionthinker.sft_data import corpus as corpus_mod
from emotionthinker.sft_data.comparative import (
    MEASURES,
    choose_order,
    prepare_source,
    rank_parameters,
    render_comparative,
)
from emotionthinker.sft_data.mixture import plan_mixture
from emotionthinker.sft_data.prompts import ATTRIBUTE_FIELDS, COMPARATIVE_RANKS, attribute_question
from tests.conftest import RAVDESS_DIR, requires_ravdess

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
SR = 16000
_WORD = re.compile(r"[\w']+")


def _cfg(tmp: Path, **overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    paths = {"workspace": str(tmp / "ws"), "data": str(tmp / "ws" / "data"), "cache": str(PROJECT_ROOT / "var" / "cache")}
    return load_config("test", environ=env, overrides={"paths": paths, **overrides})


def _annotate(records: list[dict], cfg) -> list[dict]:
    """Annotated-record contract from real measures; stressed words chosen here (reverse spoken order)."""
    out = []
    for i, rec in enumerate(records):
        m = measure_prosody(load_audio(rec["audio_path"], cfg.audio), SR, cfg.prosody)
        tokens = _WORD.findall(rec["transcription"].lower())
        stressed = [] if i % 3 == 2 else sorted(set(tokens), key=len, reverse=True)[: 1 + i % 2]
        stressed.sort(key=tokens.index, reverse=True)
        out.append({**rec, "transcription_source": "corpus", "prosody": m.to_record(), "annotations": {
            "stressed_words": stressed,
            "intonation": released_intonation(m.intonation.style, m.intonation.pattern, cfg.prosody),
            "gender": rec["gender"].title(), "age_level": "unknown"}})  # fmt: skip
    calibration = fit_calibration_from_records(out, cfg)
    for rec in out:
        levels, used = assign_levels(rec["prosody"], rec["corpus"], rec["gender"], calibration)
        levels["pitch_level"] = levels["pitch_level"] or "unknown"  # whisper: no F0
        rec["annotations"].update(levels)
        rec["prosody"]["calibration"] = used
    # Pin the cases the skip rules are about, whatever the measures said.
    first_train = next(r for r in out if r["split"] == "train" and r["duration_s"] < 4)
    first_train["annotations"]["intonation"] = "uncertain"
    return out


def _cot(annotated: list[dict]) -> list[dict]:
    return [{
        "id": r["id"], "audio_path": r["audio_path"], "transcription": r["transcription"], "emotion": r["emotion"],
        "annotations": r["annotations"], "reasoning": f"The delivery sounds {r['emotion']}.",
        "target": f"<think>The delivery sounds {r['emotion']}.</think><answer>{r['emotion']}</answer>",
        "speaker": r["speaker"], "split": r["split"]} for r in annotated]  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    cfg = _cfg(tmp)
    root = tmp / "demo"
    synthesize_demo_corpus(root, cfg)
    records = [r.model_dump(mode="json") for r in build_manifest("demo", root, cfg).records]
    annotated = _annotate(records, cfg)
    return cfg, tmp, annotated, _cot(annotated)


@pytest.fixture(scope="module")
def built(demo):
    cfg, tmp, annotated, cot = demo
    out = tmp / "corpus"
    report = build_sft_corpus(annotated, cot, out, cfg)
    files = {name: read_jsonl(path) for name, path in report.files.items()}
    return report, out, files


def _by_id(annotated):
    return {r["id"]: r for r in annotated}


def test_every_family_present_and_stage2_is_cot_only(built):
    report, _, files = built
    for split in ("train", "validation"):
        assert {s["task"] for s in files[f"stage1.{split}"]} == set(TASKS), split
        assert files[f"stage2.{split}"] and {s["task"] for s in files[f"stage2.{split}"]} == {"cot"}
        assert report.counts[f"stage1.{split}"] == {t: sum(s["task"] == t for s in files[f"stage1.{split}"]) for t in TASKS}
    assert report.total_audio_seconds == pytest.approx(
        sum(s["meta"]["duration_s"] for f in files.values() for s in f), abs=0.01)
    for attribute in ("pitch", "energy", "speed"):
        stats = report.augmentation[attribute]
        assert stats["kept"] >= 1 and 0 < stats["keep_rate"] <= 1
        assert stats["kept"] + stats["dropped"] + stats["skipped"] == stats["planned"]


def test_splits_follow_source_records(built, demo):
    _, _, files = built
    _, _, annotated, _ = demo
    split_of = {r["id"]: r["split"] for r in annotated}
    for name, samples in files.items():
        split = name.split(".")[1]
        assert {split_of[s["source_id"]] for s in samples} == {split}, name
        assert all(s["meta"]["split"] == split for s in samples)


def test_targets_match_the_annotations(built, demo):
    cfg, _, annotated, cot = demo
    _, _, files = built
    src = _by_id(annotated)
    cot_target = {c["id"]: c["target"] for c in cot}
    seen = set()
    for sample in (s for f in files.values() for s in f):
        rec = src[sample["source_id"]]
        assert sample["prompt"].startswith("<audio>") and sample["prompt"].count("<audio>") == len(sample["audio"]) == 1
        task = sample["task"]
        seen.add(task)
        if task == "attribute":
            attribute = sample["meta"]["attribute"]
            assert sample["target"] == rec["annotations"][ATTRIBUTE_FIELDS[attribute]]
            assert sample["target"] not in ("unknown", "uncertain", "too_short")
            assert sample["system"] == cfg.sft_data.system_prompt
        elif task == "stress":
            tokens = _WORD.findall(rec["transcription"].lower())
            assert sample["target"] == ", ".join(sorted(rec["annotations"]["stressed_words"], key=tokens.index))
        elif task == "asr":
            assert sample["target"] == rec["transcription"]
        elif task == "cot":
            assert (sample["system"], sample["prompt"], sample["target"]) == (SYSTEM_PROMPT, USER_PROMPT, cot_target[rec["id"]])
            assert sample["meta"]["corpus"] == "demo"
        if task != "comparative":
            assert sample["audio"] == [rec["audio_path"]]
    assert seen == set(TASKS)


def test_unanswerable_questions_are_skipped_and_counted(built, demo):
    cfg, _, annotated, _ = demo
    report, _, files = built
    asked = {(s["source_id"], s["meta"].get("attribute")) for f in files.values() for s in f if s["task"] == "attribute"}
    for rec in annotated:
        ann = rec["annotations"]
        if ann["pitch_level"] == "unknown":
            assert (rec["id"], "pitch") not in asked
        if ann["intonation"] in ("uncertain", "too_short"):
            assert (rec["id"], "intonation") not in asked
    assert report.skipped["attribute:intonation:uncertain"] >= 1
    assert report.skipped["record:split_test"] == sum(r["split"] == "test" for r in annotated)
    # Whole-clip targets (stress, ASR, CoT) must fit the encoder's window; longer clips are counted, not asked.
    window = max_clip_seconds(cfg)
    long_ones = [r for r in annotated if r["split"] != "test" and r["duration_s"] > window]
    assert long_ones and report.skipped["record:longer_than_window"] == len(long_ones)
    for s in (s for f in files.values() for s in f):
        assert s["meta"]["duration_s"] <= window + 1e-6


def test_comparative_order_agrees_with_remeasurement(built, demo):
    cfg, _, _, _ = demo
    _, _, files = built
    comparatives = [s for f in files.values() for s in f if s["task"] == "comparative"]
    assert {s["meta"]["attribute"] for s in comparatives} == {"pitch", "energy", "speed"}
    for s in comparatives:
        y, sr = sf.read(s["audio"][0], dtype="float32")
        assert sr == SR and y.size / sr <= max_clip_seconds(cfg) + 1e-6
        attribute, order = s["meta"]["attribute"], s["target"].split(" -> ")
        assert order == s["meta"]["order"] and sorted(order) == sorted(COMPARATIVE_RANKS[attribute])
        values = [getattr(measure_prosody(y[int(a * sr) : int(b * sr)], sr, cfg.prosody), MEASURES[attribute])
                  for a, b in s["meta"]["segments"]]  # fmt: skip
        # ranks named in the target sort the same way as the values measured again from the written file
        rank = {r: i for i, r in enumerate(COMPARATIVE_RANKS[attribute])}
        assert list(np.argsort([rank[r] for r in order])) == list(np.argsort(values)), (s["id"], order, values)


def test_mislabelled_rendering_is_dropped(demo):
    cfg, _, annotated, _ = demo
    rec = next(r for r in annotated if r["annotations"]["pitch_level"] not in ("unknown",) and r["split"] == "train")
    y = prepare_source(load_audio(rec["audio_path"], cfg.audio), SR, "pitch", cfg.sft_data, max_clip_seconds(cfg))
    order = ("high", "low", "medium")
    good = render_comparative(y, SR, "pitch", order, rank_parameters("pitch", cfg.sft_data), cfg)
    assert good.kept, good.reason
    # 'high' rendered with no shift at all: same pitch as 'medium', so the order claim is false
    bad = render_comparative(y, SR, "pitch", order, {"low": -4.0, "medium": 0.0, "high": 0.0}, cfg)
    assert not bad.kept and bad.reason.startswith("order_mismatch")
    loud = render_comparative(y, SR, "energy", ("low", "medium", "high"), {"low": -9.0, "medium": 0.0, "high": 0.0}, cfg)
    assert not loud.kept and loud.reason.startswith("order_mismatch")


def test_build_drops_and_counts_a_too_small_shift(demo):
    """A config whose 'high' is only 0.5 st above 'medium' fails the 2 st margin: nothing kept, all counted."""
    cfg, tmp, annotated, _ = demo
    cfg = cfg.model_copy(update={"sft_data": cfg.sft_data.model_copy(update={
        "pitch_shifts_st": [-4.0, 0.0, 0.5], "comparative_attributes": ["pitch"], "mixture": {"comparative": 1.0}})})
    report = build_sft_corpus(annotated, None, tmp / "small-shift", cfg)
    stats = report.augmentation["pitch"]
    assert stats["kept"] == 0 and stats["dropped"] >= 3 and stats["keep_rate"] == 0.0
    assert stats["drop_reasons"] == {"order_mismatch": stats["dropped"]}
    assert sum(sum(c.values()) for c in report.counts.values()) == 0
    assert not list((tmp / "small-shift" / "audio").rglob("*.wav"))


def test_rebuild_is_idempotent_and_renders_nothing(built, demo, monkeypatch):
    cfg, _, annotated, cot = demo
    report, out, _ = built
    names = [Path(p).name for p in report.files.values()] + ["report.json", "augmentations.jsonl", "validation.json"]
    before = {n: (out / n).read_bytes() for n in names}
    wavs = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.wav")}
    assert wavs

    def no_render(job):
        raise AssertionError(f"re-rendered {job['sample_id']}")

    monkeypatch.setattr(corpus_mod, "render_job", no_render)
    again = build_sft_corpus(annotated, cot, out, cfg)
    assert again.rendered_now == 0
    assert {n: (out / n).read_bytes() for n in names} == before
    assert {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.wav")} == wavs

    # After a kill (a lost clip, a torn decision line) the clip is rendered again, to the same bytes,
    # and nothing else is.
    monkeypatch.undo()
    victim = next(iter(wavs))
    content = victim.read_bytes()
    victim.unlink()
    with (out / "augmentations.jsonl").open("a") as fh:
        fh.write('{"key": "0123", "status": "ke')
    third = build_sft_corpus(annotated, cot, out, cfg)
    assert third.rendered_now == 1 and victim.read_bytes() == content
    assert {n: (out / n).read_bytes() for n in names} == before


def test_mixture_quotas_follow_the_config(built, demo):
    cfg, _, _, _ = demo
    report, _, _ = built
    for split in ("train", "validation"):
        _, quotas = plan_mixture(report.available[split], cfg.sft_data.mixture)
        assert report.counts[f"stage1.{split}"] == quotas


def test_plan_mixture():
    n, q = plan_mixture({"attribute": 1000, "asr": 100, "stress": 50}, {"attribute": 0.6, "asr": 0.2, "stress": 0.2})
    assert n == 250 and q == {"attribute": 150, "asr": 50, "stress": 50}  # stress limits: 50 / 0.2
    # a family without data drops out; the others keep their ratio among themselves
    _, q = plan_mixture({"attribute": 90, "asr": 30, "cot": 0}, {"attribute": 0.6, "asr": 0.2, "cot": 0.2})
    assert q == {"attribute": 90, "asr": 30, "cot": 0}
    _, q = plan_mixture({"attribute": 90, "asr": 30}, {"attribute": 0.75, "asr": 0.25}, cap=40)
    assert q == {"attribute": 30, "asr": 10}
    # small splits round rather than floor, so a rare family still gets its sample
    _, q = plan_mixture({"stress": 1, "attribute": 100}, {"stress": 0.15, "attribute": 0.85})
    assert q == {"stress": 1, "attribute": 6}
    assert plan_mixture({}, {"asr": 1.0}) == (0.0, {"asr": 0})


def test_choices_are_seeded_and_stable():
    orders = {choose_order("pitch", 0, f"clip-{i}") for i in range(40)}
    assert len(orders) == 6  # every order occurs
    assert choose_order("speed", 0, "clip-1") == choose_order("speed", 0, "clip-1")
    assert any(choose_order("pitch", 0, f"c{i}") != choose_order("pitch", 1, f"c{i}") for i in range(10))
    phrasings = {attribute_question("pitch", 0, f"attr-pitch-{i}")[1] for i in range(40)}
    assert len(phrasings) >= 3 and all("low, normal, high" in p for p in phrasings)


def test_config_rejects_bad_mixture_and_levels(tmp_path):
    with pytest.raises(ConfigError, match="unknown families"):
        _cfg(tmp_path, sft_data={"mixture": {"stress": 1.0, "music": 0.5}})
    with pytest.raises(ConfigError, match="strictly increasing"):
        _cfg(tmp_path, sft_data={"speed_rates": [1.0, 0.75, 1.33]})


@pytest.mark.slow
@pytest.mark.shared_data
@requires_ravdess
def test_ravdess_keep_rates_and_worker_count_independence(tmp_path):
    """Real acted speech at the tiny profile's 8 s window: pitch/energy renderings survive re-measurement,
    and a process pool writes exactly what a single process writes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    cfg = load_config("tiny", environ=env, overrides={"paths": {"workspace": str(tmp_path / "ws")}})
    records = [r.model_dump(mode="json") for r in build_manifest("ravdess", RAVDESS_DIR, cfg).records][::5]
    for i, r in enumerate(records):
        r["split"] = "validation" if i % 4 == 0 else "train"  # both splits (RAVDESS 01-02 are all train)
    annotated = _annotate(records, cfg)
    mixture = {"comparative": 0.5, "attribute": 0.5}
    outs = {}
    for workers in (1, 2):
        c = cfg.model_copy(update={"sft_data": cfg.sft_data.model_copy(update={"workers": workers, "mixture": mixture})})
        outs[workers] = (build_sft_corpus(annotated, None, tmp_path / f"w{workers}", c), tmp_path / f"w{workers}")
    (r1, d1), (r2, d2) = outs[1], outs[2]
    for name in ("stage1.train.jsonl", "stage1.validation.jsonl", "augmentations.jsonl", "report.json"):
        assert (d2 / name).read_text().replace(str(d2), str(d1)) == (d1 / name).read_text(), name
    for attribute in ("pitch", "energy"):
        assert r1.augmentation[attribute]["keep_rate"] >= 0.75, r1.augmentation


def test_attribute_questions_are_only_asked_with_an_answer():
    """Directly, not through the mixture (which writes only some candidates): 'unknown' pitch and
    'uncertain' intonation are counted and never asked; answerable attributes are asked with their value."""
    from collections import Counter

    from emotionthinker.sft_data.samples import attribute_samples

    rec = {"id": "r1", "audio_path": "/a.wav", "corpus": "demo", "split": "train", "emotion": "sad",
           "annotations": {"pitch_level": "unknown", "energy_level": "High", "speed_level": "slow", "intonation": "uncertain"}}
    skipped: Counter = Counter()
    out = attribute_samples(rec, "train", 2.0, ["pitch", "energy", "speed", "intonation"], SYSTEM_PROMPT, 0, skipped)
    assert {s["meta"]["attribute"]: s["target"] for s in out} == {"energy": "high", "speed": "slow"}
    assert skipped == Counter({"attribute:pitch:unknown": 1, "attribute:intonation:uncertain": 1})
