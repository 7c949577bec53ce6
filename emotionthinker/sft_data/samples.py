"""SFT samples from one annotated (or CoT) record: stress, attribute, ASR and cold-start CoT questions.

A sample is {id, task, audio, system, prompt, target, source_id, meta}. Ids
are "<family>[-<attribute>]-<source id>", so a rebuild writes the same ids and
a trainer can resume by id. A record gets no question whose answer is not
trustworthy (no stressed word, 'unknown' pitch, 'uncertain' intonation, no
transcription); each such case is counted by reason, never silently lost.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT
from emotionthinker.sft_data import prompts as P

TASKS: tuple[str, ...] = ("stress", "attribute", "comparative", "asr", "cot")
_WORD_RE = re.compile(r"[\w']+")


def make_sample(
    sample_id: str, task: str, audio: list[str], system: str, prompt: str, target: str, source_id: str,
    meta: dict[str, Any],
) -> dict[str, Any]:
    return {"id": sample_id, "task": task, "audio": audio, "system": system, "prompt": prompt, "target": target,
            "source_id": source_id, "meta": meta}  # fmt: skip


def record_meta(rec: dict[str, Any], split: str, duration_s: float | None) -> dict[str, Any]:
    return {
        "corpus": rec.get("corpus"),
        "speaker": rec.get("speaker"),
        "emotion": rec.get("emotion"),
        "split": split,
        "duration_s": duration_s,
    }


def ordered_stress(words: list[str], transcription: str | None) -> list[str]:
    """Stressed words in spoken order (first occurrence in the transcription); unknown ones keep their order last."""
    tokens = [t.lower() for t in _WORD_RE.findall(transcription or "")]
    pos = {}
    for i, t in enumerate(tokens):
        pos.setdefault(t, i)

    def key(item: tuple[int, str]) -> tuple[int, int]:
        i, w = item
        return (pos.get(w.lower().strip(".,!?;:\"'"), len(tokens) + i), i)

    return [w for _, w in sorted(enumerate(words), key=key)]


def stress_sample(rec: dict[str, Any], split: str, duration_s: float | None, system: str, seed: int,
                  skipped: Counter) -> dict[str, Any] | None:  # fmt: skip
    words = [w.strip() for w in (rec.get("annotations") or {}).get("stressed_words") or [] if str(w).strip()]
    if not words:
        skipped["stress:no_stressed_words"] += 1
        return None
    sid = f"stress-{rec['id']}"
    i, question = P.stress_question(seed, sid)
    return make_sample(sid, "stress", [rec["audio_path"]], system, P.with_audio(question),
                       ", ".join(ordered_stress(words, rec.get("transcription"))), rec["id"],
                       {**record_meta(rec, split, duration_s), "phrasing": i})  # fmt: skip


def attribute_samples(rec: dict[str, Any], split: str, duration_s: float | None, attributes: list[str], system: str,
                      seed: int, skipped: Counter) -> list[dict[str, Any]]:  # fmt: skip
    ann = rec.get("annotations") or {}
    out = []
    for attribute in attributes:
        value = ann.get(P.ATTRIBUTE_FIELDS[attribute])
        value = value.strip().lower() if isinstance(value, str) else value
        if value not in P.ATTRIBUTE_VALUES[attribute]:
            skipped[f"attribute:{attribute}:{value}"] += 1  # 'unknown' pitch, 'uncertain' intonation, ...
            continue
        sid = f"attr-{attribute}-{rec['id']}"
        i, question = P.attribute_question(attribute, seed, sid)
        out.append(make_sample(sid, "attribute", [rec["audio_path"]], system, P.with_audio(question), value,
                               rec["id"], {**record_meta(rec, split, duration_s), "attribute": attribute,
                                           "phrasing": i}))  # fmt: skip
    return out


def asr_sample(rec: dict[str, Any], split: str, duration_s: float | None, system: str, seed: int,
               skipped: Counter) -> dict[str, Any] | None:  # fmt: skip
    text = (rec.get("transcription") or "").strip()
    source = rec.get("transcription_source", "corpus" if text else "none")
    if not text or source not in ("corpus", "asr"):
        skipped["asr:no_transcription"] += 1
        return None
    sid = f"asr-{rec['id']}"
    i, question = P.asr_question(seed, sid)
    return make_sample(sid, "asr", [rec["audio_path"]], system, P.with_audio(question), text, rec["id"],
                       {**record_meta(rec, split, duration_s), "transcription_source": source, "phrasing": i})


def cot_sample(cot: dict[str, Any], split: str, duration_s: float | None,
               source: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Cold-start CoT: the released prompt and system message, the CoT record's target as is.

    The target is not checked here: the GX suite quarantines a malformed one with its reason.
    """
    meta = record_meta({**cot, **(source or {})}, split, duration_s)
    return make_sample(f"cot-{cot['id']}", "cot", [cot["audio_path"]], SYSTEM_PROMPT, USER_PROMPT,
                       cot.get("target") or "", cot["id"], meta)  # fmt: skip
