"""Batched answers over evaluation records, one output row per clip, streamed to disk and resumable.

Clips are sorted by duration before batching, so the clips of a batch have about the same number of
audio tokens (little padding), and answered greedily with the released system and user prompt. Each
finished batch is appended to `predictions.jsonl` in a folder keyed by (model identity, evaluated
data, generation settings): a rerun after a crash answers only the clips still missing, and a second
evaluation of the same model on the same data reuses every answer.

Row (the per-clip outputs table):
    id, audio_path, corpus, speaker, gold, output (raw text), answer (inside <answer>, None when
    absent or ambiguous), predicted (the label the clip is scored with, None when there is none),
    answer_source, format_ok, correct, n_tokens (generated tokens)
`predicted` is the <answer> block normalised to a label (answer_source "tag"); a model that answers
in free text instead (the paper's baselines do: only EmotionThinker was trained on the tags) is
scored by the one label its text names (answer_source "text"; none or several named -> None, "none").
Negations are not parsed, so "not angry" counts as angry: the tag-only numbers (`predicted_strict`,
metric uar_strict) are kept beside. Only the raw output is stored in predictions.jsonl; the parsed
fields are derived when rows are read, so a parser change applies to stored answers.
A clip whose audio cannot be used is quarantined with its reason instead (no row).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.audio import AudioError, load_audio
from emotionthinker.config import Config
from emotionthinker.labels import _SYNONYMS, SYSTEM_PROMPT, USER_PROMPT, normalize_label
from emotionthinker.records import QuarantineRecord, append_jsonl, iter_jsonl, prepare_resume, write_jsonl
from models.rewards import extract_answer, format_reward

log = logging.getLogger(__name__)

STAGE = "evaluate"
PREDICTIONS = "predictions.jsonl"
QUARANTINE = "quarantine.jsonl"
ROW_FIELDS = ("id", "audio_path", "corpus", "speaker", "gold", "output", "answer", "predicted", "answer_source",
              "predicted_strict", "format_ok", "correct", "n_tokens")  # fmt: skip
# Every spelling labels.normalize_label accepts, longest first so "contempt or disgust" wins over "disgust".
_LABEL_WORDS = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(w) for w in sorted(_SYNONYMS, key=len, reverse=True)) + r")(?![\w-])", re.IGNORECASE
)


def label_in_text(text: str) -> str | None:
    """The one label a free-text answer names (any accepted spelling); None when it names none or several."""
    found = {normalize_label(m.group(1)) for m in _LABEL_WORDS.finditer(text or "")}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


@dataclass
class PredictionResult:
    rows: list[dict[str, Any]]  # in record order
    quarantined: list[dict[str, Any]]
    directory: Path
    n_generated: int  # clips answered by this call (the rest were resumed)
    wall_s: float
    batch_size: int
    max_new_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions_path(self) -> Path:
        return self.directory / PREDICTIONS

    @property
    def failure_reasons(self) -> Counter:
        return Counter(q["reason"] for q in self.quarantined)


def output_row(record: dict[str, Any], text: str, n_tokens: int) -> dict[str, Any]:
    """One clip's row: the raw text, the parsed answer, its label and the two checks."""
    answer = extract_answer(text)
    strict = normalize_label(answer)
    if strict is not None:
        predicted, source = strict, "tag"
    elif answer is None and (predicted := label_in_text(text)) is not None:
        source = "text"  # no answer block at all: the free-text fallback
    else:
        predicted, source = None, "none"
    return {
        "id": record["id"],
        "audio_path": record["audio_path"],
        "corpus": record.get("corpus", ""),
        "speaker": record.get("speaker", ""),
        "gold": record["emotion"],
        "output": text,
        "answer": answer,
        "predicted": predicted,
        "answer_source": source,
        "predicted_strict": strict,
        "format_ok": bool(format_reward(text)),
        "correct": predicted == record["emotion"],
        "n_tokens": int(n_tokens),
    }


def run_key(identity: str, eval_data_version: str, max_new_tokens: int, system: str, prompt: str) -> str:
    """Folder name of one (model, data, generation settings) evaluation; batch size is not part of it."""
    blob = json.dumps({"model": identity, "data": eval_data_version, "max_new_tokens": max_new_tokens,
                       "system": system, "prompt": prompt, "decoding": "greedy"}, sort_keys=True)  # fmt: skip
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _quarantine(record: dict[str, Any], exc: AudioError) -> dict[str, Any]:
    return QuarantineRecord(id=record["id"], audio_path=record["audio_path"], stage=STAGE, reason=exc.reason,
                            error_type=type(exc).__name__, detail=str(exc)).model_dump(mode="json")  # fmt: skip


def length_sorted(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Longest first: the batch needing the most memory runs first, so an out-of-memory shows at once."""
    return sorted(records, key=lambda r: -(r.get("duration_s") or 0.0))


def predict_records(
    lm,
    records: Sequence[dict[str, Any]],
    cfg: Config,
    directory: Path,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    sort_by_length: bool = True,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> PredictionResult:
    """Answer every record not yet in `directory`/predictions.jsonl; return all rows in record order.

    `lm` is an AudioLM or a function returning one, called only when some clip is left to answer.
    """
    t0 = time.perf_counter()
    batch_size = batch_size or cfg.eval.batch_size
    max_new_tokens = max_new_tokens or cfg.eval.max_new_tokens or cfg.models.max_new_tokens
    directory.mkdir(parents=True, exist_ok=True)
    pred_path, quar_path = directory / PREDICTIONS, directory / QUARANTINE
    done = prepare_resume(pred_path) | prepare_resume(quar_path)
    todo = [r for r in records if r["id"] not in done]
    if sort_by_length:
        todo = length_sorted(todo)
    bar = _progress(len(todo), progress)
    n_generated = 0
    if todo and callable(lm) and not hasattr(lm, "generate"):
        lm = lm()
    if todo:
        lm.model.eval()
    try:
        for start in range(0, len(todo), batch_size):
            batch, audios = [], []
            for rec in todo[start : start + batch_size]:
                try:
                    audios.append(load_audio(rec["audio_path"], cfg.audio))
                    batch.append(rec)
                except AudioError as exc:
                    append_jsonl(quar_path, _quarantine(rec, exc))
            if batch:
                gen = lm.generate(audios, USER_PROMPT, max_new_tokens=max_new_tokens, do_sample=False, system=SYSTEM_PROMPT)
                lines = [json.dumps({"id": rec["id"], "output": text, "n_tokens": len(ids)}, ensure_ascii=False)
                         for rec, text, ids in zip(batch, gen.texts, gen.completion_ids)]  # fmt: skip
                with pred_path.open("a", encoding="utf-8") as fh:  # one write per batch: a kill loses at most it
                    fh.write("\n".join(lines) + "\n")
                n_generated += len(batch)
            bar.update(len(todo[start : start + batch_size]))
            if on_batch:
                on_batch(min(start + batch_size, len(todo)), len(todo))
    finally:
        bar.close()
    by_id = {p["id"]: p for p in iter_jsonl(pred_path, torn_tail=True)}
    rows = [output_row(r, by_id[r["id"]]["output"], by_id[r["id"]]["n_tokens"]) for r in records if r["id"] in by_id]
    wanted = {r["id"] for r in records}
    quarantined = list({q["id"]: q for q in iter_jsonl(quar_path, torn_tail=True) if q["id"] in wanted and q["id"] not in by_id}.values())
    return PredictionResult(rows, quarantined, directory, n_generated, time.perf_counter() - t0, batch_size, max_new_tokens)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="clip", disable=not enabled or total == 0, mininterval=2.0)


def write_outputs_table(rows: Sequence[dict[str, Any]], directory: Path, extra_fields: Sequence[str] = ()) -> dict[str, Path]:
    """The per-clip outputs as JSONL (exact) and CSV (for spreadsheets), in record order."""
    fields = list(ROW_FIELDS) + [f for f in extra_fields if f not in ROW_FIELDS]
    jsonl = directory / "outputs.jsonl"
    write_jsonl(jsonl, [{k: r.get(k) for k in fields} for r in rows])
    csv_path = directory / "outputs.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items() if k in fields})
    tmp.replace(csv_path)
    return {"jsonl": jsonl, "csv": csv_path}


def read_outputs_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows back from outputs.jsonl or outputs.csv (CSV cells parsed back to bools, ints and None)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return list(iter_jsonl(path))
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            r = {k: (None if v == "" else v) for k, v in r.items()}
            for k in ("format_ok", "correct"):
                if r.get(k) is not None:
                    r[k] = r[k] == "True"
            if r.get("n_tokens") is not None:
                r["n_tokens"] = int(r["n_tokens"])
            rows.append(r)
    return rows
