"""Reward-model tuples for tests: the demo corpus (espeak-ng, real audio) with annotations taken from its
design levels, gold reasoning by the offline composer, and degraded variants by emotionthinker.cot.degrade:
the same tuple format the cot stage writes, built in seconds on the test profile."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from emotionthinker.cot import build_rm_tuples
from emotionthinker.cot.offline import compose
from emotionthinker.democorpus import synthesize_demo_corpus
from emotionthinker.records import read_jsonl


def gold_records(metadata: Path) -> list[dict]:
    out = []
    for rec in read_jsonl(metadata):
        ann = {"pitch_level": rec["design_pitch_level"] or "normal", "energy_level": rec["design_energy_level"],
               "speed_level": rec["design_speed_level"], "stressed_words": [], "intonation": "uncertain",
               "gender": rec["gender"].capitalize(), "age_level": "unknown"}  # fmt: skip
        gold = {"id": Path(rec["audio_path"]).stem, "audio_path": str(metadata.parent / rec["audio_path"]),
                "emotion": rec["emotion"], "transcription": rec["transcription"], "split": rec["split"],
                "annotations": ann}  # fmt: skip
        gold["reasoning"] = compose(gold).text
        out.append(gold)
    return out


def make_rm_tuples(out: Path, cfg) -> Path:
    """<out>/rm_tuples.jsonl (gold + cfg.rm_data.variants_per_record degraded variants per demo clip)."""
    metadata = synthesize_demo_corpus(out / "demo", cfg)
    path = out / "rm_tuples.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in build_rm_tuples(gold_records(metadata), cfg)))
    return path


_SHARED: dict[str, Path] = {}


def shared_rm_tuples(cfg) -> Path:
    """make_rm_tuples once per test process; tests must not modify the file (copy it first)."""
    if "path" not in _SHARED:
        root = Path(tempfile.mkdtemp(prefix="et-rm-tuples-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED["path"] = make_rm_tuples(root, cfg)
    return _SHARED["path"]
