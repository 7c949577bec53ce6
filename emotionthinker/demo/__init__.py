"""The synthetic demo corpus: espeak-ng speech for the nine classes with designed prosody levels."""

from emotionthinker.demo.corpus import GLIDES_FILE, METADATA_FILE, synthesize_demo_corpus, synthesize_glides
from emotionthinker.demo.espeak import EspeakError, EspeakNotFoundError, VoiceError

__all__ = [
    "GLIDES_FILE",
    "METADATA_FILE",
    "EspeakError",
    "EspeakNotFoundError",
    "VoiceError",
    "synthesize_demo_corpus",
    "synthesize_glides",
]
