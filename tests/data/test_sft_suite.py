"""GX suite for SFT samples: good samples pass, each kind of broken row is quarantined with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotionthinker.config import load_config
from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT
from emotionthinker.records import read_jsonl
from emotionthinker.sft_data import build_sft_corpus
from emotionthinker.sft_data.validation import validate_sft_files, validate_sft_samples
from emotionthinker.validation import ValidationFailed


def _wav(path: Path, seconds: float = 0.5) -> str:
    # The suite checks that the file exists; what it holds does not matter here.
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.1 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000)
    return str(path)


def _sample(sid: str, task: str, audio: list[str], target: str, prompt: str = "<audio>Question?", **meta) -> dict:
    system = SYSTEM_PROMPT if task == "cot" else "You are a helpful assistant."
    return {"id": sid, "task": task, "audio": audio, "system": system, "prompt": prompt, "target": target,
            "source_id": "src-" + sid, "meta": meta}  # fmt: skip


@pytest.fixture
def wav(tmp_path):
    return _wav(tmp_path / "clip.wav")


def _good(wav: str) -> list[dict]:
    return [
        _sample("stress", "stress", [wav], "door"),
        _sample("attr-pitch", "attribute", [wav], "high", attribute="pitch"),
        _sample("attr-speed", "attribute", [wav], "slow", attribute="speed"),
        _sample("attr-inton", "attribute", [wav], "rising-falling", attribute="intonation"),
        _sample("cmp-pitch", "comparative", [wav], "high -> low -> medium", attribute="pitch"),
        _sample("cmp-speed", "comparative", [wav], "medium -> fast -> slow", attribute="speed"),
        _sample("asr", "asr", [wav], "Kids are talking by the door"),
        _sample("cot", "cot", [wav], "<think>A tense, loud delivery.</think><answer>contempt or disgust</answer>",
                prompt=USER_PROMPT),
        _sample("two-clips", "attribute", [wav, wav], "low", prompt="<audio><audio>Which is lower?", attribute="energy"),
    ]


def test_good_samples_pass(wav, cfg):
    report = validate_sft_samples(_good(wav), cfg)
    assert report.quarantined == [] and len(report.valid) == 9


BROKEN = [
    # (sample changes, text the reason must contain)
    ({"id": "b-missing-file", "audio": ["/nonexistent/clip.wav"]}, "missing_audio_files=1"),
    ({"id": "b-two-tags", "prompt": "<audio><audio>Question?"}, "extra_audio_tags=1"),
    ({"id": "b-no-tag-first", "prompt": "Question? <audio>"}, "is not starting with <audio>"),
    ({"id": "b-no-audio", "audio": []}, "n_audio=0"),
    ({"id": "b-blank-target", "target": "   "}, "is not non-blank"),
    ({"id": "b-task", "task": "music"}, "task='music' not in"),
    ({"id": "b-cot-open", "task": "cot", "target": "<think>tense</think><answer>angry"}, "<think>reasoning</think>"),
    ({"id": "b-cot-label", "task": "cot", "target": "<think>tense</think><answer>bored</answer>"}, "with a label of LABELS"),
    ({"id": "b-cot-empty", "task": "cot", "target": "<think> </think><answer>sad</answer>"}, "<think>reasoning</think>"),
    ({"id": "b-cot-nested", "task": "cot", "target": "<think>a<think>b</think><answer>sad</answer>"}, "<think>reasoning</think>"),
    ({"id": "b-attr-unknown", "task": "attribute", "target": "unknown", "meta": {"attribute": "pitch"}}, "target='unknown'"),
    ({"id": "b-attr-vocab", "task": "attribute", "target": "fast", "meta": {"attribute": "pitch"}}, "target='fast'"),
    ({"id": "b-attr-none", "task": "attribute", "target": "high", "meta": {}}, "attribute is missing"),
    ({"id": "b-cmp-repeat", "task": "comparative", "target": "high -> high -> low", "meta": {"attribute": "pitch"}},
     "three distinct ranks"),
    ({"id": "b-cmp-mixed", "task": "comparative", "target": "slow -> high -> fast", "meta": {"attribute": "speed"}},
     "three distinct ranks of ['slow', 'medium', 'fast']"),
]


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """One GX run (~1 s each) over the good samples and every broken row of BROKEN."""
    wav = _wav(tmp_path_factory.mktemp("suite") / "clip.wav")
    good = _good(wav)
    broken = [{**_sample("x", "asr", [wav], "hello"), **changes} for changes, _ in BROKEN]
    cfg = load_config("test", environ={})
    report = validate_sft_samples(good + broken, cfg, stage="unit")
    return good, report


def test_only_broken_rows_are_quarantined(checked):
    good, report = checked
    assert [s["id"] for s in report.valid] == [s["id"] for s in good]
    assert sorted(q.id for q in report.quarantined) == sorted(c["id"] for c, _ in BROKEN)


@pytest.mark.parametrize("changes,reason", BROKEN, ids=[c["id"] for c, _ in BROKEN])
def test_broken_row_is_quarantined_with_its_reason(checked, changes, reason):
    _, report = checked
    (q,) = [q for q in report.quarantined if q.id == changes["id"]]
    assert reason in q.reason, q.reason
    assert q.stage == "unit" and q.error_type == "ExpectationFailed" and q.suite == "sft_samples"


def test_ids_unique_per_file_not_across_files(wav, cfg):
    cot = _sample("cot-1", "cot", [wav], "<think>calm and low.</think><answer>sad</answer>", prompt=USER_PROMPT)
    reports = validate_sft_files({"stage1.train": [cot], "stage2.train": [cot, dict(cot)]}, cfg)
    assert reports["stage1.train"].quarantined == []  # the same CoT sample may sit in both stages
    assert [q.id for q in reports["stage2.train"].quarantined] == ["cot-1", "cot-1"]
    assert "is duplicated" in reports["stage2.train"].quarantined[0].reason


def test_build_quarantines_a_broken_cot_target_and_stops_over_the_bound(tmp_path, cfg):
    """End to end: a CoT record with a truncated target never reaches stage 2; too many stop the build."""
    def cot(i: int, target: str) -> dict:
        return {"id": f"c{i}", "audio_path": _wav(tmp_path / f"c{i}.wav", 1.0), "transcription": "hi",
                "emotion": "sad", "annotations": {}, "reasoning": "r", "target": target, "speaker": f"s{i}",
                "split": "train"}  # fmt: skip

    good = "<think>Low, slow and quiet.</think><answer>sad</answer>"
    records = [cot(i, good) for i in range(9)] + [cot(9, "<think>Low, slow and quiet.</think>")]
    out = tmp_path / "sft"
    report = build_sft_corpus([], records, out, cfg)  # 1 of 10 is under validation.max_failure_rate=0.2
    assert report.counts["stage2.train"]["cot"] == 9 and report.quarantined["stage2.train"] == 1
    assert "c9" not in {s["source_id"] for s in read_jsonl(out / "stage2.train.jsonl")}
    (q,) = read_jsonl(out / "stage2.train.quarantine.jsonl")
    assert q["id"] == "cot-c9" and "<think>reasoning</think><answer>label</answer>" in q["reason"]
    suite = json.loads((out / "validation.json").read_text())["sft_samples"]
    assert not suite["success"] and any(e["unexpected_count"] for e in suite["expectations"])

    records += [cot(i, "<answer>sad</answer>") for i in range(10, 14)]  # 5 of 14 bad: over the bound
    with pytest.raises(ValidationFailed, match=r"stage[12]\.train: 35\.7% of records failed"):
        build_sft_corpus([], records, out, cfg)
    assert len(read_jsonl(out / "stage2.train.quarantine.jsonl")) == 5  # written before stopping
