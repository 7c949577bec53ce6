"""Prosody-centric SFT corpus (DESIGN.md stage 5): stress, attribute, comparative, ASR and CoT samples."""

from emotionthinker.sft_data.corpus import SftCorpusReport, build_sft_corpus, max_clip_seconds, output_lock
from emotionthinker.sft_data.samples import TASKS

__all__ = ["TASKS", "SftCorpusReport", "build_sft_corpus", "max_clip_seconds", "output_lock"]
