"""Questions and answer vocabularies of the prosody-centric SFT tasks.

Several phrasings per question so the model learns the attribute, not one
sentence; the phrasing of a sample is a seeded hash of its id, so a rebuild
picks the same one. Attribute answers are the released EmotionCoT values as
they stand in the annotations. Comparative answers name the *relative* rank
of each rendition, first to last, joined by " -> ":

    pitch:  low | medium | high      (e.g. "high -> low -> medium")
    energy: low | medium | high
    speed:  slow | medium | fast

"medium" (not "normal") because the middle rendition is the unmodified clip,
whose calibrated level may be anything.
"""

from __future__ import annotations

import hashlib

AUDIO_TAG = "<audio>"
ORDER_SEPARATOR = " -> "

# Values an attribute question may have as its answer; other values ('unknown' pitch of a whisper,
# 'uncertain'/'too_short' intonation) carry no trustworthy answer and get no question.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "pitch": ("low", "normal", "high"),
    "energy": ("low", "normal", "high"),
    "speed": ("slow", "normal", "fast"),
    "intonation": ("rising", "falling", "rising-falling", "falling-rising", "flat", "expressive"),
}
ATTRIBUTE_FIELDS: dict[str, str] = {
    "pitch": "pitch_level",
    "energy": "energy_level",
    "speed": "speed_level",
    "intonation": "intonation",
}
COMPARATIVE_RANKS: dict[str, tuple[str, str, str]] = {
    "pitch": ("low", "medium", "high"),
    "energy": ("low", "medium", "high"),
    "speed": ("slow", "medium", "fast"),
}

_ATTRIBUTE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "pitch": (
        "What is the pitch level of this speech? Answer with one of: {options}.",
        "Is the speaker's voice pitched low, normal or high? Answer with one of: {options}.",
        "How high is the speaker's pitch in this clip? Choose from: {options}.",
        "Classify the pitch level of the voice you hear ({options}).",
    ),
    "energy": (
        "What is the energy level of this speech? Answer with one of: {options}.",
        "How loud and forceful is the speaker? Choose from: {options}.",
        "Classify the vocal energy of this clip ({options}).",
        "Is the speech delivered with low, normal or high energy? Answer with one of: {options}.",
    ),
    "speed": (
        "What is the speaking rate of this speech? Answer with one of: {options}.",
        "Does the speaker talk slowly, at a normal pace or fast? Choose from: {options}.",
        "Classify the speed of the speech in this clip ({options}).",
        "How fast is the speaker talking? Answer with one of: {options}.",
    ),
    "intonation": (
        "What is the intonation contour of this speech? Answer with one of: {options}.",
        "How does the speaker's pitch move over the utterance? Choose from: {options}.",
        "Describe the intonation pattern of this clip with one of: {options}.",
        "Which intonation does the speaker use? Answer with one of: {options}.",
    ),
}
_STRESS_QUESTIONS: tuple[str, ...] = (
    "Which word(s) does the speaker emphasise?",
    "Which word or words carry the strongest stress in this utterance?",
    "List the word(s) the speaker puts emphasis on.",
    "Which words are stressed in this sentence? Name them in the order spoken.",
)
_ASR_QUESTIONS: tuple[str, ...] = (
    "Transcribe the speech.",
    "Write down exactly what the speaker says.",
    "What does the speaker say? Give the transcription.",
    "Transcribe this audio clip word for word.",
)
_COMPARATIVE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "pitch": (
        "The same sentence is spoken three times in this clip at different pitches. From first to last, "
        "name the relative pitch of each rendition ({options}), separated by ' -> '.",
        "You hear one utterance repeated three times. Order the renditions by pitch: give low, medium or "
        "high for each, first to last, joined by ' -> '.",
        "Compare the pitch of the three repetitions in this clip. Answer with the relative pitch of each "
        "({options}) in the order heard, separated by ' -> '.",
    ),
    "energy": (
        "The same sentence is spoken three times in this clip at different loudness. From first to last, "
        "name the relative energy of each rendition ({options}), separated by ' -> '.",
        "You hear one utterance repeated three times. Order the renditions by energy: give low, medium or "
        "high for each, first to last, joined by ' -> '.",
        "Compare the vocal energy of the three repetitions in this clip. Answer with the relative energy of "
        "each ({options}) in the order heard, separated by ' -> '.",
    ),
    "speed": (
        "The same sentence is spoken three times in this clip at different speeds. From first to last, "
        "name the relative speed of each rendition ({options}), separated by ' -> '.",
        "You hear one utterance repeated three times. Order the renditions by speaking rate: give slow, "
        "medium or fast for each, first to last, joined by ' -> '.",
        "Compare the speaking rate of the three repetitions in this clip. Answer with the relative speed of "
        "each ({options}) in the order heard, separated by ' -> '.",
    ),
}


def unit_hash(seed: int, *parts: str) -> int:
    """A stable 64-bit integer from the seed and parts (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _pick(options: tuple[str, ...], seed: int, key: str) -> tuple[int, str]:
    i = unit_hash(seed, "phrasing", key) % len(options)
    return i, options[i]


def attribute_question(attribute: str, seed: int, key: str) -> tuple[int, str]:
    i, text = _pick(_ATTRIBUTE_QUESTIONS[attribute], seed, key)
    return i, text.format(options=", ".join(ATTRIBUTE_VALUES[attribute]))


def stress_question(seed: int, key: str) -> tuple[int, str]:
    return _pick(_STRESS_QUESTIONS, seed, key)


def asr_question(seed: int, key: str) -> tuple[int, str]:
    return _pick(_ASR_QUESTIONS, seed, key)


def comparative_question(attribute: str, seed: int, key: str) -> tuple[int, str]:
    i, text = _pick(_COMPARATIVE_QUESTIONS[attribute], seed, key)
    return i, text.format(options=", ".join(COMPARATIVE_RANKS[attribute]))


def order_target(order: tuple[str, ...] | list[str]) -> str:
    return ORDER_SEPARATOR.join(order)


def with_audio(question: str, n_audio: int = 1) -> str:
    """User text with one audio placeholder per clip at the start, as labels.USER_PROMPT has it."""
    return AUDIO_TAG * n_audio + question
