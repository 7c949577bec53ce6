"""Claim parser and response checks on hand-written reasoning (the phrasing an LLM uses, not the composer's)."""

from __future__ import annotations

import pytest

from emotionthinker.cot import lexicon as lx
from emotionthinker.cot.checks import (
    check_response,
    clean_response,
    compare_claims,
    fact_check,
    mentions_transcript,
    opens_with_label,
    parse_claims,
    sentence_skeleton,
    split_sentences,
)

T = "Kids are talking by the door"


def claims(text: str, transcription: str | None = T) -> set[tuple[str, str]]:
    return {(c.attribute, c.value) for c in parse_claims(text, transcription)}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Her voice is high-pitched and she speaks rapidly, with a rising intonation at the end.",
         {("gender", "Female"), ("pitch_level", "high"), ("speed_level", "fast"), ("intonation", "rising")}),
        ("He places emphasis on 'door' and the volume is loud.",
         {("gender", "Male"), ("stressed_words", "door"), ("energy_level", "high")}),
        ("A middle-aged man speaks in a monotone voice at an average pace.",
         {("age_level", "Middle-aged"), ("gender", "Male"), ("intonation", "flat"), ("speed_level", "normal")}),
        ("The speaking rate is higher than normal while the energy remains low.",
         {("speed_level", "fast"), ("energy_level", "low")}),
        ("Her pitch rises and then falls across the sentence.", {("gender", "Female"), ("intonation", "rising-falling")}),
        ("The intonation dips before rising at the end of the utterance.", {("intonation", "falling-rising")}),
        ("The melody is flat; loudness is moderate.", {("intonation", "flat"), ("energy_level", "normal")}),
        ("The elderly speaker's low pitch and slow pace are telling.",
         {("age_level", "Elderly"), ("pitch_level", "low"), ("speed_level", "slow")}),
        ("She stresses “talking” and “kids”, speaking quietly.",
         {("gender", "Female"), ("stressed_words", "talking"), ("stressed_words", "kids"), ("energy_level", "low")}),
        ("A young girl speaks with a fast tempo.", {("age_level", "Child"), ("gender", "Female"), ("speed_level", "fast")}),
    ],
)
def test_claims_from_free_phrasing(text, expected):
    assert claims(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The pitch is not particularly high.",  # negated
        "Rising energy and a deep sadness colour the line.",  # 'rising' describes energy, 'deep' no anchor
        "The pace is neither fast nor slow.",
        "Nothing about this is quick to judge.",
    ],
)
def test_no_claim_where_none_is_made(text):
    assert not {a for a, _ in claims(text)} & {"pitch_level", "speed_level", "energy_level", "intonation"}


def test_quoted_words_never_count_as_claims():
    # 'high' and 'slow' are inside the transcript quote; only the quote itself is a claim
    text = 'She says "the shelf is high and the train is slow today".'
    got = claims(text, "The shelf is high and the train is slow today")
    assert got == {("gender", "Female"), ("transcript", "the shelf is high and the train is slow today")}


def test_compare_claims_statuses():
    ann = {"pitch_level": "high", "energy_level": "low", "speed_level": "normal", "stressed_words": ["door"],
           "intonation": "uncertain", "gender": "Male", "age_level": "unknown"}
    text = ('The man speaks with a high pitch and loud energy, stressing "door", while the intonation falls. '
            'He is an elderly speaker saying "Kids are walking by the door".')
    fc = compare_claims(parse_claims(text, T), ann, T)
    status = {(v.claim.attribute, v.claim.value): v.status for v in fc.verdicts}
    assert status[("pitch_level", "high")] == "supported"
    assert status[("energy_level", "high")] == "contradicted"
    assert status[("stressed_words", "door")] == "supported"
    assert status[("intonation", "falling")] == "unsupported"  # contour was not determinable
    assert status[("age_level", "Elderly")] == "unsupported"  # age unknown
    assert status[("gender", "Male")] == "supported"
    assert status[("transcript", "Kids are walking by the door")] == "contradicted"  # misquoted
    assert fc.contradicted_attributes == {"energy_level", "transcript"}
    assert not fc.ok and 0 < fc.score() < 1


def test_fact_check_of_a_faithful_text_is_ok():
    rec = {"transcription": T, "annotations": {"pitch_level": "low", "energy_level": "normal", "speed_level": "slow",
                                               "stressed_words": [], "intonation": "falling", "gender": "Female",
                                               "age_level": "Young Adult"}}
    text = f'A young adult woman says "{T}" slowly, her pitch low and the loudness moderate; the contour falls.'
    fc = fact_check(text, rec)
    assert fc.ok and fc.score() == 1.0
    assert fc.attributes_mentioned == {"age_level", "gender", "transcript", "speed_level", "pitch_level",
                                       "energy_level", "intonation"}


def test_response_checks():
    rec = {"emotion": "sad", "transcription": T}
    body = ("The voice is low and slow, the energy subdued and the contour falling toward the end of the line. " * 3)
    good = f'{body} She says "{T}" with little force. Taken together this is sadness.'
    assert check_response(good, rec) == []
    assert check_response("", rec) == ["empty"]
    assert check_response(f'Sadness. "{T}"', rec)[0].startswith("too_few_words")
    assert "opens_with_label" in check_response("This is clearly sad. " + good, rec)
    assert "no_transcript" in check_response(good.replace(f'"{T}"', "the line"), rec)
    assert any(p.startswith("too_many_words") for p in check_response(good * 4, rec))


def test_label_inside_a_quote_is_not_an_opening_label():
    assert not opens_with_label('She says "I am so sad today" quietly. The rest follows.', "sad")
    assert opens_with_label("Anger is audible. The rest follows.", "angry")


def test_mentions_transcript_accepts_partial_contiguous_quote():
    long_t = "I told you already that the meeting was moved to Thursday afternoon"
    assert mentions_transcript('He says "the meeting was moved to Thursday afternoon" sharply.', long_t)
    assert not mentions_transcript('He says "the meeting" sharply.', long_t)
    assert mentions_transcript("No words here.", None)


def test_clean_response_strips_tags_and_fences():
    assert clean_response("```\n<think> reasoning here </think><answer>sad</answer>\n```") == "reasoning here"
    assert clean_response("  plain text  ") == "plain text"
    assert clean_response(None) == ""


def test_sentences_ignore_punctuation_inside_quotes():
    sents = split_sentences('She asks "Is it here? Yes." and waits. Then she leaves.')
    assert [s.text for s in sents] == ['She asks "Is it here? Yes." and waits.', "Then she leaves."]


def test_skeleton_abstracts_content_words():
    a = sentence_skeleton('Her pitch sits high, suggesting agitation about "door".')
    b = sentence_skeleton('His pitch sits low, suggesting gloom about "kids".')
    assert a == b


def test_lexicon_keeps_emotion_words_apart_from_claim_words():
    # an emotion word that could be read as a claim would let interpretation edits change facts
    assert not lx.emotion_words() & lx.all_claim_words()
    families = [set(ws) for ws in lx.EMOTION_FAMILY.values()]
    assert sum(len(f) for f in families) == len(set().union(*families))  # each word names one emotion
