"""EmotionCoT construction (DESIGN.md stages 4 and 6): reasoning writer and reward-model tuples.

Plain functions for the flows and the CLI:
- ``write_cot(records, out_path, cfg) -> CotReport``: reasoning for annotated records (LLM endpoint
  or offline composer), resumable, with an errors file;
- ``build_rm_tuples(cot_records, cfg) -> list[dict]``: (q, r, g) tuples for the reward model;
- ``score_histogram(tuples)``: count of each score level per criterion.
"""

from emotionthinker.cot.degrade import build_rm_tuples, iter_rm_tuples, score_histogram, write_rm_tuples
from emotionthinker.cot.writer import CotReport, errors_path_for, write_cot

__all__ = ["CotReport", "build_rm_tuples", "errors_path_for", "iter_rm_tuples", "score_histogram", "write_cot",
           "write_rm_tuples"]
