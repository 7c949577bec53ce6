"""Held-out scoring of SFT answers: CoT format and emotion, attribute and comparative answers in free phrasing."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.sft import SftSample
from models.sft_eval import score, select_for_eval, summarize


def sample(task, target, **meta):
    return SftSample(id=f"{task}-{target}-{meta}", task=task, audio=Path("/x.wav"), prompt="<audio>?", target=target, meta=meta)


COT = sample("cot", "<think>Low, slow voice.</think><answer>sad</answer>", emotion="sad")


@pytest.mark.parametrize(
    ("text", "fmt", "correct"),
    [
        ("<think>The voice drops.</think><answer>sad</answer>", 1.0, 1.0),
        ("<think>The voice drops.</think>\n<answer> Sadness </answer>", 1.0, 1.0),
        ("<think>Loud.</think><answer>angry</answer>", 1.0, 0.0),
        ("The speaker sounds sad.", 0.0, 0.0),
        ("<answer>sad</answer>", 0.0, 1.0),  # right label, wrong format: counted apart
        ("<think>x</think><answer>sad</answer> and more", 0.0, 1.0),
    ],
)
def test_cot_format_and_emotion(text, fmt, correct):
    assert score(COT, text) == {"format": fmt, "emotion_correct": correct}


def test_cot_gold_falls_back_to_the_target_answer():
    no_meta = sample("cot", "<think>x</think><answer>fear</answer>")
    assert score(no_meta, "<think>y</think><answer>fearful</answer>")["emotion_correct"] == 1.0


@pytest.mark.parametrize(
    ("attribute", "target", "text", "correct"),
    [
        ("pitch", "high", "high", 1.0),
        ("pitch", "high", "The pitch of this voice is High.", 1.0),
        ("pitch", "high", "It is high or maybe low.", 0.0),  # hedging names two values
        ("pitch", "high", "normal", 0.0),
        ("pitch", "high", "highly unusual", 0.0),  # whole words only
        ("intonation", "rising-falling", "rising-falling", 1.0),
        ("intonation", "rising", "rising-falling", 0.0),  # 'rising' is not inside 'rising-falling'
        ("speed", "slow", "I cannot tell.", 0.0),
    ],
)
def test_attribute_answers(attribute, target, text, correct):
    assert score(sample("attribute", target, attribute=attribute), text) == {"correct": correct, "attribute": attribute}


@pytest.mark.parametrize(
    ("text", "correct"),
    [("high -> low -> medium", 1.0), ("First high, then low, and medium last.", 1.0), ("low -> high -> medium", 0.0),
     ("high -> low", 0.0)],
)  # fmt: skip
def test_comparative_order(text, correct):
    s = sample("comparative", "high -> low -> medium", attribute="pitch")
    assert score(s, text)["correct"] == correct


def test_unscored_tasks_and_summary():
    assert score(sample("asr", "hello there"), "hello there") == {}
    rows = [
        {"task": "cot", "format": 1.0, "emotion_correct": 1.0},
        {"task": "cot", "format": 0.0, "emotion_correct": 0.0},
        {"task": "attribute", "correct": 1.0, "attribute": "pitch"},
        {"task": "attribute", "correct": 0.0, "attribute": "speed"},
        {"task": "attribute", "correct": 1.0, "attribute": "speed"},
        {"task": "asr"},
    ]
    m = summarize(rows)
    assert m == {"cot/n": 2, "cot/format_rate": 0.5, "cot/emotion_accuracy": 0.5, "attribute/n": 3,
                 "attribute/accuracy": pytest.approx(2 / 3), "attribute/pitch_accuracy": 1.0,
                 "attribute/speed_accuracy": 0.5}  # fmt: skip


def test_selection_takes_attributes_in_turn_and_caps_each_task():
    samples = [sample("attribute", str(i), attribute="pitch") for i in range(5)]
    samples += [sample("attribute", str(i), attribute="speed") for i in range(5)]
    samples += [sample("cot", f"<think>{i}</think><answer>sad</answer>") for i in range(5)] + [sample("asr", "x")]
    chosen = select_for_eval(samples, per_task=4)
    assert [s.task for s in chosen] == ["cot"] * 4 + ["attribute"] * 4
    assert [s.meta["attribute"] for s in chosen if s.task == "attribute"] == ["pitch", "speed", "pitch", "speed"]
