"""EmotionCoT records, targets, speaker splits, prompts, cache and client helpers."""

from __future__ import annotations

import random

import pytest

from emotionthinker.config import CotConfig
from emotionthinker.cot.cache import ResponseCache
from emotionthinker.cot.client import ChatClient, CotEndpointError, extract_text, resolve_api_key
from emotionthinker.cot.prompt import PROMPT_VERSION, build_cot_messages, build_degrade_messages, prompt_hash
from emotionthinker.cot.records import (
    EmotionCotRecord,
    InvalidRecordError,
    build_cot_record,
    from_released,
    make_target,
    parse_target,
    speaker_splits,
    validate_annotated,
)
from emotionthinker.labels import LABELS

ANN = {"pitch_level": "high", "energy_level": "low", "speed_level": "fast", "stressed_words": ["door"],
       "intonation": "uncertain", "gender": "Female", "age_level": "unknown"}


def annotated(**over):
    rec = {"id": "r1", "audio_path": "/a.wav", "corpus": "c", "split": "train", "speaker": "s1", "gender": "female",
           "emotion": "fear", "source_label": "fearful", "transcription": "Kids are talking by the door.",
           "duration_s": 3.1, "annotations": dict(ANN), "prosody": {"f0_median_hz": 220.0}}
    rec.update(over)
    return rec


def test_target_round_trip():
    t = make_target("  some reasoning. ", "contempt or disgust")
    assert t == "<think>some reasoning.</think><answer>contempt or disgust</answer>"
    assert parse_target(t) == ("some reasoning.", "contempt or disgust")
    assert parse_target("<think>x</think>trailing<answer>sad</answer>") is None
    assert parse_target("no tags") is None


def test_cot_record_keeps_released_names_and_input_fields():
    rec = build_cot_record(annotated(), "reasoning text", {"writer": "offline-composer", "model": "m",
                                                           "prompt_version": PROMPT_VERSION}, "validation")
    assert list(rec)[:10] == ["id", "audio_path", "transcription", "emotion", "annotations", "reasoning", "target",
                              "provenance", "speaker", "split"]
    assert rec["split"] == "validation" and rec["prosody"] == {"f0_median_hz": 220.0} and rec["corpus"] == "c"
    EmotionCotRecord.model_validate(rec)


@pytest.mark.parametrize(
    "change, where",
    [
        ({"emotion": "boredom"}, "emotion"),
        ({"annotations": {**ANN, "pitch_level": "very high"}}, "pitch_level"),
        ({"annotations": {k: v for k, v in ANN.items() if k != "intonation"}}, "intonation"),
        ({"annotations": None}, "annotations"),
    ],
)
def test_invalid_annotated_records_are_rejected_with_the_field(change, where):
    with pytest.raises(InvalidRecordError, match=where):
        validate_annotated(annotated(**change))


def test_synonym_emotions_are_normalised():
    assert validate_annotated(annotated(emotion="Fearful"))["emotion"] == "fear"


def test_speaker_split_is_by_speaker_stable_and_keeps_test_speakers():
    recs = [{"speaker": f"spk{i % 12}", "split": "test" if i % 12 == 11 else "train"} for i in range(120)]
    splits = speaker_splits(recs, 0.25, seed=0)
    assert splits["spk11"] == "test"
    trainable = [s for s in splits if s != "spk11"]
    assert {splits[s] for s in trainable} == {"train", "validation"}
    # adding speakers never moves an existing one
    more = recs + [{"speaker": f"new{i}", "split": "train"} for i in range(30)]
    bigger = speaker_splits(more, 0.25, seed=0)
    assert all(bigger[s] == splits[s] for s in splits)


def test_two_speakers_still_get_a_validation_speaker():
    splits = speaker_splits([{"speaker": "a"}, {"speaker": "b"}], 0.1)
    assert sorted(splits.values()) == ["train", "validation"]
    assert speaker_splits([{"speaker": "a"}], 0.1) == {"a": "train"}


def test_from_released_row():
    row = {"audio_path": "x.wav", "transcription": "hi there", "emotion": "Contempt/Disgust",
           "annotations": {**ANN, "intonation": "Rising"}, "reasoning": "why"}
    rec = from_released(row, 7)
    assert rec["emotion"] == "contempt or disgust" and rec["annotations"]["intonation"] == "rising"
    assert rec["id"] == "emotioncot-000007" and rec["target"] == "<think>why</think><answer>contempt or disgust</answer>"


def test_prompt_states_the_facts_and_the_rules():
    msgs = build_cot_messages(annotated())
    user = msgs[-1]["content"]
    assert msgs[0]["role"] == "system" and 'Transcription: "Kids are talking by the door."' in user
    assert "Pitch level: high" in user and '"door"' in user and "fear" in user
    assert "do not mention intonation" in user  # contour uncertain
    assert "age unknown" in user and "50 and 200 words" in user
    known = build_cot_messages(annotated(annotations={**ANN, "intonation": "rising", "age_level": "Elderly"}))[-1]["content"]
    assert "Intonation contour: rising" in known and "elderly" in known and "do not mention intonation" not in known
    h = prompt_hash(msgs, "gpt-4o", 0.8)
    assert h == prompt_hash(build_cot_messages(annotated()), "gpt-4o", 0.8) != prompt_hash(msgs, "gpt-4o", 0.7)


def test_degrade_prompt_carries_the_target_scores():
    scores = {"factual_alignment": 2, "interpretative_quality": 5, "caption_completeness": 3,
              "fluency_and_structural_clarity": 1}
    user = build_degrade_messages(annotated(), "gold text", scores)[-1]["content"]
    assert "factual_alignment = 2" in user and "fluency_and_structural_clarity = 1" in user and "gold text" in user


def test_response_cache_round_trip(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.get("k") is None
        cache.put("k", "m", "text", {"total_tokens": 5})
    with ResponseCache(tmp_path / "c.sqlite") as cache:  # persisted
        assert cache.get("k") == {"model": "m", "text": "text", "usage": {"total_tokens": 5}} and len(cache) == 1


def test_api_key_resolution_never_needs_a_key_for_local_servers():
    local = CotConfig(base_url="http://127.0.0.1:8000/v1", api_key_env="MY_KEY")
    assert resolve_api_key(local, {}) == "EMPTY"
    assert resolve_api_key(local, {"MY_KEY": "abc"}) == "abc"
    remote = CotConfig(base_url="https://api.openai.com/v1", api_key_env="MY_KEY")
    with pytest.raises(CotEndpointError, match="MY_KEY"):
        resolve_api_key(remote, {})
    with pytest.raises(CotEndpointError):
        ChatClient(CotConfig(base_url=""))


def test_backoff_grows_with_jitter_and_respects_caps_and_retry_after():
    client = ChatClient(CotConfig(base_url="http://127.0.0.1:9/v1", backoff_base_s=0.1, backoff_max_s=1.0), environ={})
    client._rng = random.Random(0)
    d = [client._backoff(a, None) for a in range(8)]
    assert 0.05 <= d[0] <= 0.15 and all(x <= 1.5 for x in d) and d[3] > d[0]
    assert client._backoff(0, 0.8) >= 0.8 and client._backoff(0, 60.0) <= 1.5
    client.close()


def test_extract_text_rejects_what_is_not_a_completion():
    from emotionthinker.cot.client import MalformedResponseError

    for bad in ("<html>", None, type("R", (), {"choices": []})()):
        with pytest.raises(MalformedResponseError):
            extract_text(bad)


def test_labels_cover_the_nine_classes():
    from emotionthinker.cot import lexicon as lx

    assert set(lx.LABEL_FORMS) == set(LABELS) == set(lx.EMOTION_HINTS) == set(lx.TYPICAL_CUES)
