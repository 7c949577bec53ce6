"""The nine-class label space of the released EmotionThinker model, and the prompts."""

from __future__ import annotations

import re

LABELS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "contempt or disgust",
    "confused",
    "whisper",
    "surprise",
    "fear",
)

SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here "
    "</answer>."
)
USER_PROMPT = (
    "<audio>What is the emotion expressed in this audio clip? Please choose one from the following "
    "options: neutral, happy, sad, angry, contempt or disgust, confused, whisper, surprise, fear."
)

# The obvious synonyms and nothing else: answer normalisation must not reward near misses.
_SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "calm": "neutral",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "angry": "angry",
    "anger": "angry",
    "contempt or disgust": "contempt or disgust",
    "contempt/disgust": "contempt or disgust",
    "contempt": "contempt or disgust",
    "disgust": "contempt or disgust",
    "disgusted": "contempt or disgust",
    "confused": "confused",
    "confusion": "confused",
    "whisper": "whisper",
    "whispering": "whisper",
    "surprise": "surprise",
    "surprised": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
}


def normalize_label(text: str | None) -> str | None:
    """Map an answer to one of LABELS, accepting case, whitespace, a final period and synonyms."""
    if text is None:
        return None
    key = re.sub(r"\s+", " ", text.strip().lower()).rstrip(".")
    return _SYNONYMS.get(key)
