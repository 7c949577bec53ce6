"""Write EmotionCoT records for annotated records, resumably.

Output is appended record by record (keyed by id) so a killed run loses at
most the record in flight; a rerun skips ids already written and retries those
in the errors file. At the end of a run every input id is in exactly one of
the output file and the errors file (``<out stem>.errors.jsonl``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.cot.cache import ResponseCache
from emotionthinker.cot.checks import check_response
from emotionthinker.cot.client import CallFailed, ChatClient, add_usage, retry_counts
from emotionthinker.cot.offline import COMPOSER_NAME, COMPOSER_VERSION, compose
from emotionthinker.cot.prompt import PROMPT_VERSION, build_cot_messages, prompt_hash
from emotionthinker.cot.records import InvalidRecordError, build_cot_record, speaker_splits, validate_annotated
from emotionthinker.records import append_jsonl, iter_jsonl, prepare_resume, sort_jsonl, write_jsonl

log = logging.getLogger(__name__)


def errors_path_for(out_path: str | Path) -> Path:
    """cot.jsonl -> cot.errors.jsonl (beside the output)."""
    p = Path(out_path)
    return p.with_name((p.stem if p.suffix else p.name) + ".errors.jsonl")


def response_cache_path(cfg: Config) -> Path:
    return cfg.workspace / "cot" / "response_cache.sqlite"


@dataclass
class CotReport:
    out_path: str
    errors_path: str
    writer: str
    model: str
    prompt_version: str
    n_input: int = 0
    n_duplicates: int = 0
    n_invalid: int = 0
    n_resumed: int = 0  # already in the output before this run
    n_written: int = 0  # written by this run
    n_errors: int = 0  # sent to the errors file by this run (invalid records included)
    n_cached: int = 0
    n_requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    error_reasons: Counter[str] = field(default_factory=Counter)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    duration_s: float = 0.0

    @property
    def n_retries(self) -> int:
        return sum(self.retries.values())

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow."""
        m: dict[str, float] = {
            "cot_input": self.n_input, "cot_duplicates": self.n_duplicates, "cot_invalid": self.n_invalid,
            "cot_resumed": self.n_resumed, "cot_written": self.n_written, "cot_errors": self.n_errors,
            "cot_cached": self.n_cached, "cot_requests": self.n_requests, "cot_retries": self.n_retries,
            "cot_duration_s": round(self.duration_s, 3),
        }
        m.update({f"cot_{k}": v for k, v in self.usage.items()})
        m.update({f"cot_retry_{k.replace(':', '_').replace(',', '_')}": v for k, v in self.retries.items()})
        return m

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["retries"] = dict(self.retries)
        d["error_reasons"] = dict(self.error_reasons)
        d["n_retries"] = self.n_retries
        return d


def _error_record(rec: dict[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
    return {"id": rec.get("id"), "audio_path": rec.get("audio_path"), "stage": "cot", "reason": reason, **extra}


def _reset_errors(errors_path: Path, done: set[str], retry_ids: set[str]) -> set[str]:
    """Drop error entries for ids that are written or will be retried now; return ids still errored."""
    prepare_resume(errors_path)
    kept = [e for e in iter_jsonl(errors_path, torn_tail=True) if e.get("id") not in done and e.get("id") not in retry_ids]
    if errors_path.exists():
        write_jsonl(errors_path, kept)
    return {e["id"] for e in kept if "id" in e}


def write_cot(
    records: Iterable[dict[str, Any]],
    out_path: str | Path,
    cfg: Config,
    *,
    environ: dict[str, str] | None = None,
    progress: bool = False,
) -> CotReport:
    """Reason about every annotated record: LLM endpoint when ``cfg.cot.base_url`` is set, else the offline composer."""
    t0 = time.monotonic()
    cot = cfg.cot
    out_path = Path(out_path)
    errors_path = errors_path_for(out_path)
    online = bool(cot.base_url)
    report = CotReport(
        str(out_path), str(errors_path),
        writer="openai-compatible" if online else COMPOSER_NAME,
        model=cot.model if online else f"{COMPOSER_NAME}-v{COMPOSER_VERSION}",
        prompt_version=PROMPT_VERSION,
    )

    # Validate and de-duplicate input (first occurrence of an id wins).
    seen: set[str] = set()
    input_ids: list[str] = []
    valid: list[dict[str, Any]] = []
    invalid: list[tuple[dict[str, Any], str]] = []
    for raw in records:
        report.n_input += 1
        rid = raw.get("id")
        if rid in seen:
            report.n_duplicates += 1
            continue
        if rid is not None:
            seen.add(rid)
            input_ids.append(rid)
        try:
            valid.append(validate_annotated(raw))
        except InvalidRecordError as exc:
            invalid.append((raw, f"invalid_record: {exc}"))

    done = prepare_resume(out_path)
    retry_ids = seen if cot.retry_errors else set()
    still_errored = _reset_errors(errors_path, done, retry_ids)
    for raw, reason in invalid:
        if raw.get("id") in done or raw.get("id") in still_errored:
            continue
        append_jsonl(errors_path, _error_record(raw, reason))
        report.n_invalid += 1
        report.n_errors += 1
        report.error_reasons["invalid_record"] += 1

    splits = speaker_splits(valid, cot.validation_fraction, cot.seed)
    pending = [r for r in valid if r["id"] not in done and r["id"] not in still_errored]
    report.n_resumed = sum(1 for r in valid if r["id"] in done)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc=f"cot ({report.writer})", unit="rec", file=sys.stderr)
    try:
        if online and pending:  # nothing left to do needs no endpoint (nor a key)
            _write_online(pending, splits, out_path, errors_path, cfg, report, environ, bar)
        elif not online:
            _write_offline(pending, splits, out_path, errors_path, cfg, report, bar)
        # Streamed in completion order (parallel requests, records retried on a rerun): rewrite both
        # files in input order, so the same responses give the same bytes and DVC hash.
        for path in (out_path, errors_path):
            sort_jsonl(path, input_ids)
    finally:
        if bar is not None:
            bar.close()
        report.duration_s = time.monotonic() - t0
    log.info("cot: %d written, %d errors, %d resumed, usage %s", report.n_written, report.n_errors, report.n_resumed,
             report.usage)
    return report


def sample_table(records: Iterable[dict[str, Any]], n: int = 20, seed: int = 0) -> dict[str, list[Any]]:
    """A reproducible sample as columns (for ``mlflow.log_table``): one row per record, no raw measures."""
    import random

    pool = sorted(records, key=lambda r: r["id"])
    rows = random.Random(seed).sample(pool, min(n, len(pool)))
    cols = ("id", "emotion", "split", "transcription", "reasoning")
    table: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in cols}
    table["annotations"] = [json.dumps(r.get("annotations"), sort_keys=True) for r in rows]
    table["writer"] = [(r.get("provenance") or {}).get("writer") for r in rows]
    table["model"] = [(r.get("provenance") or {}).get("model") for r in rows]
    return table


def _write_offline(pending, splits, out_path, errors_path, cfg, report, bar) -> None:
    cot = cfg.cot
    for rec in pending:
        comp = compose(rec, seed=cot.seed, min_words=cot.min_words, max_words=cot.max_words)
        problems = check_response(comp.text, rec, cot.min_words, cot.max_words)
        if problems:  # the composer is built to pass; a failure is a bug worth seeing, not a silent drop
            append_jsonl(errors_path, _error_record(rec, "composer_check:" + ",".join(problems)))
            report.n_errors += 1
            report.error_reasons["composer_check"] += 1
        else:
            prov = {"writer": COMPOSER_NAME, "model": report.model, "prompt_version": PROMPT_VERSION,
                    "base_url_host": None, "seed": cot.seed, "templates": comp.templates}
            append_jsonl(out_path, build_cot_record(rec, comp.text, prov, splits.get(rec.get("speaker", "unknown"), "train")))
            report.n_written += 1
        if bar is not None:
            bar.update(1)


def _write_online(pending, splits, out_path, errors_path, cfg, report, environ, bar) -> None:
    cot = cfg.cot
    cache = ResponseCache(response_cache_path(cfg))
    client = ChatClient(cot, cache, environ)

    def one(rec: dict[str, Any]):
        messages = build_cot_messages(rec)
        key = prompt_hash(messages, cot.model, cot.temperature)
        check = lambda text: check_response(text, rec, cot.min_words, cot.max_words)  # noqa: E731
        return key, client.complete(messages, check=check, cache_key=key)

    try:
        with ThreadPoolExecutor(max_workers=cot.concurrency, thread_name_prefix="cot") as pool:
            futures: dict[Future, dict[str, Any]] = {}
            queue = list(pending)
            # Keep a bounded number of requests in flight so an interrupt leaves little work half done.
            while queue or futures:
                while queue and len(futures) < cot.concurrency * 2:
                    rec = queue.pop(0)
                    futures[pool.submit(one, rec)] = rec
                finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for fut in finished:
                    rec = futures.pop(fut)
                    _collect(fut, rec, splits, out_path, errors_path, client, report)
                    if bar is not None:
                        bar.update(1)
    finally:
        client.close()
        cache.close()


def _collect(fut: Future, rec, splits, out_path, errors_path, client: ChatClient, report: CotReport) -> None:
    try:
        key, res = fut.result()
    except CallFailed as exc:
        report.n_requests += exc.attempts
        report.retries.update(retry_counts(exc.history))
        add_usage(report.usage, exc.usage)
        append_jsonl(errors_path, _error_record(rec, exc.reason, attempts=exc.attempts, history=exc.history))
        report.n_errors += 1
        report.error_reasons[exc.reason.split(":")[0]] += 1
        return
    report.n_requests += res.attempts
    report.retries.update(retry_counts(res.history))
    add_usage(report.usage, res.usage)
    report.n_cached += int(res.cached)
    prov = {"writer": "openai-compatible", "model": client.cfg.model, "prompt_version": PROMPT_VERSION,
            "base_url_host": client.host, "prompt_hash": key, "cached": res.cached, "attempts": res.attempts,
            "usage": res.usage}
    append_jsonl(out_path, build_cot_record(rec, res.text, prov, splits.get(rec.get("speaker", "unknown"), "train")))
    report.n_written += 1
