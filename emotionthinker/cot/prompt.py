"""Prompts sent to an OpenAI-compatible chat model.

``build_cot_messages`` states the paper's Appendix B.3 requirements (written
afresh, not copied) and fills them from an annotated record.
``build_degrade_messages`` is the Appendix D idea: ask for a rewrite of gold
reasoning that deserves a given score on each of the four criteria.
Bump the version constants whenever the wording changes: they are part of the
response-cache key and of every record's provenance.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from emotionthinker.cot import lexicon as lx

PROMPT_VERSION = "cot-b3-v1"
DEGRADE_PROMPT_VERSION = "rm-degrade-d-v1"
CRITERIA: tuple[str, ...] = (
    "factual_alignment",
    "interpretative_quality",
    "caption_completeness",
    "fluency_and_structural_clarity",
)

COT_SYSTEM = (
    "You write the inner reasoning of a listener who works out a speaker's emotion from a voice recording. "
    "You cannot hear the clip; you receive measurements taken from it and the true emotion. Write the reasoning "
    "as if you were hearing the clip and did not yet know the answer."
)

COT_INSTRUCTIONS = """\
Measured facts about one speech clip:
- Emotion (the answer; do not reveal it early): {emotion}
- Transcription: "{transcription}"
- Speaker: {gender}{age}
- Pitch level: {pitch_level}
- Energy (loudness) level: {energy_level}
- Speaking rate: {speed_level}
- Intonation contour: {intonation}
- Stressed words: {stressed}

Write the listener's reasoning under these rules:
1. Reason toward the emotion as though it were still unknown; let the conclusion appear only at the end, and do not start with the emotion word or any synonym of it.
2. Rely mainly on how things are said (pitch, energy, rate, contour, emphasis); use the meaning of the words as supporting evidence only.
3. Quote the transcription, in double quotes, at least once.
4. Work the speaker's gender{age_rule} into the reasoning naturally.
5. Explain how the cues that fit the emotion support it; do not invent cues that are not listed above.
6. {intonation_rule}
7. Vary sentence structure and wording; avoid a fixed template.
8. Length: between 50 and 200 words, one paragraph of plain prose, no lists, no tags, no final label line.
Return only the reasoning paragraph."""

_INTONATION_UNKNOWN_RULE = "The contour could not be determined reliably: do not mention intonation or contour at all."
_INTONATION_KNOWN_RULE = "Mention the intonation contour where it helps the argument."


def _fmt_stressed(ws: list[str] | None) -> str:
    return ", ".join(f'"{w}"' for w in ws) if ws else "none detected (do not claim any emphasised word)"


def _fmt_level(v: str | None) -> str:
    return v if v not in (None, "", "unknown") else "not measurable (do not describe it)"


def build_cot_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages for one annotated record (released EmotionCoT annotation names)."""
    ann = record.get("annotations") or {}
    age = ann.get("age_level")
    age_known = age not in (None, "", "unknown")
    intonation = ann.get("intonation")
    inton_known = intonation in lx.INTONATIONS
    user = COT_INSTRUCTIONS.format(
        emotion=record["emotion"],
        transcription=(record.get("transcription") or "").strip() or "(no intelligible words)",
        gender=(ann.get("gender") or "unknown").lower(),
        age=f", {age.lower()}" if age_known else " (age unknown: do not guess it)",
        pitch_level=_fmt_level(ann.get("pitch_level")),
        energy_level=_fmt_level(ann.get("energy_level")),
        speed_level=_fmt_level(ann.get("speed_level")),
        intonation=intonation if inton_known else f"{intonation or 'unknown'} (not reliable)",
        stressed=_fmt_stressed(ann.get("stressed_words")),
        age_rule=" and age group" if age_known else "",
        intonation_rule=_INTONATION_KNOWN_RULE if inton_known else _INTONATION_UNKNOWN_RULE,
    )
    return [{"role": "system", "content": COT_SYSTEM}, {"role": "user", "content": user}]


def retry_note(problems: list[str]) -> str:
    """Appended to the user message after a rejected response, so a real model can fix it."""
    readable = {
        "empty": "it was empty",
        "opens_with_label": "it named the emotion in its first sentence",
        "no_transcript": "it did not quote the transcription",
    }
    parts = []
    for p in problems:
        code, _, n = p.partition(":")
        if code == "too_few_words":
            parts.append(f"it had only {n} words (minimum 50)")
        elif code == "too_many_words":
            parts.append(f"it had {n} words (maximum 200)")
        else:
            parts.append(readable.get(code, code))
    return "\n\nA previous answer was rejected because " + "; ".join(parts) + ". Please write it again."


def prompt_hash(messages: list[dict[str, str]], model: str, temperature: float, version: str = PROMPT_VERSION) -> str:
    """Cache key: everything that determines the response distribution."""
    blob = json.dumps({"m": messages, "model": model, "t": temperature, "v": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


DEGRADE_SYSTEM = (
    "You produce training data for a reward model that grades emotion-reasoning texts. Given a correct "
    "reasoning and target scores (1 = very poor, 5 = excellent) on four criteria, you rewrite the reasoning so "
    "that a careful grader would give exactly those scores."
)

DEGRADE_INSTRUCTIONS = """\
Facts measured from the clip: {facts}
Transcription: "{transcription}"
Correct emotion: {emotion}

Correct reasoning:
{reasoning}

Target scores:
- factual_alignment = {factual_alignment}: lower it by contradicting the measured facts (wrong levels, wrong contour, wrong gender or age, misquoted words); the lower the score, the more facts are wrong.
- interpretative_quality = {interpretative_quality}: lower it by weakening or breaking the link between the cues and the emotion (non-sequiturs, cues read as a different emotion).
- caption_completeness = {caption_completeness}: lower it by leaving out cues and content; the lower the score, the less is covered.
- fluency_and_structural_clarity = {fluency_and_structural_clarity}: lower it with grammar errors, misspellings and disordered sentences.
A criterion at 5 must stay as good as in the correct reasoning; change each criterion only through its own kind of damage.
Keep the final emotion ({emotion}) as the conclusion. Return only the rewritten reasoning."""


def build_degrade_messages(record: dict[str, Any], reasoning: str, scores: dict[str, int]) -> list[dict[str, str]]:
    ann = record.get("annotations") or {}
    facts = ", ".join(f"{k}={v}" for k, v in ann.items() if v not in (None, "", [], "unknown"))
    user = DEGRADE_INSTRUCTIONS.format(
        facts=facts,
        transcription=(record.get("transcription") or "").strip(),
        emotion=record["emotion"],
        reasoning=reasoning,
        **{c: int(scores[c]) for c in CRITERIA},
    )
    return [{"role": "system", "content": DEGRADE_SYSTEM}, {"role": "user", "content": user}]
