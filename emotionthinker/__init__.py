"""EmotionThinker platform: prosody-aware explainable speech emotion reasoning as tracked, versioned runs."""

__version__ = "0.1.0"
