"""Public entry point of the demo corpus (``emotionthinker demo-corpus``); the code lives in emotionthinker.demo."""

from emotionthinker.demo import (
    GLIDES_FILE,
    METADATA_FILE,
    EspeakError,
    EspeakNotFoundError,
    VoiceError,
    synthesize_demo_corpus,
    synthesize_glides,
)

__all__ = [
    "GLIDES_FILE",
    "METADATA_FILE",
    "EspeakError",
    "EspeakNotFoundError",
    "VoiceError",
    "synthesize_demo_corpus",
    "synthesize_glides",
]
