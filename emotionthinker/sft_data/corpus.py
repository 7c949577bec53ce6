"""Build the prosody-centric SFT corpus (DESIGN.md stage 5) from annotated and CoT records.

Output under out_dir:
    stage1.{train,validation}.jsonl   prosody tasks + ASR (+ a CoT share) in the configured mixture:
                                      SFT stage I trains encoder, adapter and LM on it
    stage2.{train,validation}.jsonl   cold-start CoT only: SFT stage II (LM LoRA)
    <file>.quarantine.jsonl           samples the GX suite rejected, with reasons
    audio/<attribute>/*.wav           comparative clips
    augmentations.jsonl               one decision per planned comparative clip (kept / dropped / skipped)
    report.json                       counts per task and split, keep rates, audio seconds
    validation.json                   the GX suite: each expectation, passed or not, failing row count

Splits follow the source records (speaker-disjoint by the corpus adapters):
validation samples come only from validation records; test records are never
used. The build is deterministic for a seed and idempotent: a rerun reuses
every augmentation decision and wav whose inputs did not change (the decision
key hashes source, order and every setting that changes the audio or the
verdict) and writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker import locks
from emotionthinker.config import Config
from emotionthinker.records import append_jsonl, iter_jsonl, prepare_resume, write_jsonl
from emotionthinker.sft_data import prompts as P
from emotionthinker.sft_data.comparative import choose_order, render_job
from emotionthinker.sft_data.mixture import hash_order, plan_mixture, select
from emotionthinker.sft_data.samples import (
    TASKS,
    asr_sample,
    attribute_samples,
    cot_sample,
    make_sample,
    record_meta,
    stress_sample,
)
from emotionthinker.sft_data.validation import validate_sft_files
from emotionthinker.stored_paths import absolute_path, resolve_stored_path, stored_path
from emotionthinker.validation import ValidationFailed

log = logging.getLogger(__name__)
_SAFE_NAME = re.compile(r"[^\w.-]")  # record ids from JSONL corpora may hold '/' or spaces
SPLITS = ("train", "validation")
STAGES = ("stage1", "stage2")
AUDIO_DIR = "audio"
DECISIONS_FILE = "augmentations.jsonl"
REPORT_FILE = "report.json"
VALIDATION_FILE = "validation.json"  # what the GX suite checked and how many rows failed each expectation


@dataclass
class SftCorpusReport:
    out_dir: str
    files: dict[str, str]  # "stage1.train" -> path
    counts: dict[str, dict[str, int]]  # "stage1.train" -> task -> samples written
    available: dict[str, dict[str, int]]  # split -> family -> candidates (comparative: kept clips)
    skipped: dict[str, int]  # reason -> records/questions not asked
    augmentation: dict[str, dict[str, Any]]  # attribute -> planned/kept/dropped/skipped/keep_rate/reasons
    audio_seconds: dict[str, float]  # "stage1.train" -> seconds of audio over its samples
    quarantined: dict[str, int]  # "stage1.train" -> samples the GX suite rejected
    rendered_now: int  # comparative clips rendered by this run (0 on an unchanged rerun)
    wall_seconds: float
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total_audio_seconds(self) -> float:
        return round(sum(self.audio_seconds.values()), 3)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_audio_seconds": self.total_audio_seconds}

    def summary(self) -> str:
        lines = []
        for name, tasks in self.counts.items():
            body = ", ".join(f"{t} {n}" for t, n in tasks.items() if n) or "empty"
            lines.append(f"{name}: {sum(tasks.values())} samples ({body}), {self.audio_seconds.get(name, 0):.0f} s audio, "
                         f"{self.quarantined.get(name, 0)} quarantined")  # fmt: skip
        for attribute, a in self.augmentation.items():
            rate = "n/a" if a["keep_rate"] is None else f"{a['keep_rate']:.0%}"
            lines.append(f"comparative {attribute}: {a['kept']} kept / {a['kept'] + a['dropped']} verified "
                         f"(keep rate {rate}), {a['skipped']} sources skipped {a['skip_reasons']}")  # fmt: skip
        lines.append(f"total audio {self.total_audio_seconds:.0f} s; rendered now {self.rendered_now}; "
                     f"skipped questions {self.skipped}")  # fmt: skip
        return "\n".join(lines)


def max_clip_seconds(cfg: Config) -> float:
    return cfg.sft_data.max_clip_s or float(cfg.models.audio_window_s)


def _duration(rec: dict[str, Any]) -> float | None:
    for value in (rec.get("duration_s"), (rec.get("prosody") or {}).get("duration_s")):
        if value is not None:
            return float(value)
    try:
        import soundfile as sf

        return float(sf.info(str(resolve_stored_path(rec["audio_path"]))).duration)
    except Exception:  # a missing/unreadable file: the GX suite quarantines its samples with the reason
        return None


def _split_of(rec: dict[str, Any], skipped: Counter, what: str) -> str | None:
    split = rec.get("split")
    if split not in SPLITS:
        skipped[f"{what}:split_{split}"] += 1
        return None
    return split


def _fits(duration: float | None, max_s: float, skipped: Counter, what: str) -> bool:
    # The encoder sees max_s seconds: a target about the whole clip would be partly unheard.
    if duration is not None and duration > max_s:
        skipped[f"{what}:longer_than_window"] += 1
        return False
    return True


def _job_key(rec: dict[str, Any], attribute: str, order: tuple[str, ...], cfg: Config, max_s: float) -> str:
    sft = cfg.sft_data
    settings = {
        "source": [rec["id"], str(rec["audio_path"])],
        "attribute": attribute,
        "order": list(order),
        "sft": sft.model_dump(mode="json", include={
            "pitch_shifts_st", "energy_gains_db", "speed_rates", "pitch_margin_st", "energy_margin_db",
            "speed_margin_ratio", "gap_s", "trim_top_db", "crop_to_fit", "min_segment_s", "stretch_n_fft"}),
        "prosody": cfg.prosody.model_dump(mode="json", exclude={"workers"}),
        "sample_rate": cfg.audio.sample_rate,
        "max_clip_s": max_s,
    }  # fmt: skip
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _comparative_jobs(rec: dict[str, Any], split: str, out_dir: Path, cfg: Config, max_s: float,
                      skipped: Counter) -> list[dict[str, Any]]:  # fmt: skip
    jobs = []
    for attribute in cfg.sft_data.comparative_attributes:
        if attribute == "pitch" and (rec.get("annotations") or {}).get("pitch_level") == "unknown":
            skipped["comparative:pitch:unvoiced"] += 1  # no F0 to shift and re-measure
            continue
        order = choose_order(attribute, cfg.sft_data.seed, rec["id"])
        key = _job_key(rec, attribute, order, cfg, max_s)
        jobs.append({
            "key": key,
            "sample_id": f"cmp-{attribute}-{rec['id']}",
            "source_id": rec["id"],
            "source_audio": str(rec["audio_path"]),
            "attribute": attribute,
            "order": list(order),
            "audio_path": stored_path(out_dir / AUDIO_DIR / attribute / f"{_SAFE_NAME.sub('_', rec['id'])}-{key[:12]}.wav"),
            "max_clip_s": max_s,
            "split": split,
            "record": rec,
        })  # fmt: skip
    return jobs


def _render_until(jobs: list[dict[str, Any]], quota: int, cache: dict[str, dict[str, Any]], decisions_path: Path,
                  cfg: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:  # fmt: skip
    """Decide jobs in order until `quota` are kept; cached decisions are reused, never re-rendered.

    Returns (kept decisions, the decisions up to the last kept one, clips rendered now). With several
    workers a batch may overshoot the quota; only the prefix a sequential run would have decided is
    returned (and later kept on disk), so files and report do not depend on the worker count.
    """
    workers = cfg.sft_data.workers or os.cpu_count() or 1
    config = cfg.model_dump(mode="json")
    decided: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    rendered = 0
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and quota > 0 else None
    try:
        i = 0
        while i < len(jobs) and len(kept) < quota:
            batch = jobs[i : i + (workers * 2 if pool else 1)]
            i += len(batch)
            todo = [j for j in batch if not _reusable(cache.get(j["key"]))]
            payload = [{k: v for k, v in j.items() if k not in ("record", "split")} | {"config": config} for j in todo]
            fresh = list(pool.map(render_job, payload)) if pool else [render_job(p) for p in payload]
            for d in fresh:
                append_jsonl(decisions_path, d)  # streamed: a killed run keeps what it rendered
                cache[d["key"]] = d
                rendered += d["status"] != "skipped"
            for j in batch:
                if len(kept) >= quota:
                    break
                d = cache[j["key"]]
                decided.append(d)
                if d["status"] == "kept":
                    kept.append(d)
    finally:
        if pool:
            pool.shutdown()
    return kept, decided, rendered


def _reusable(decision: dict[str, Any] | None) -> bool:
    if decision is None:
        return False
    return decision["status"] != "kept" or resolve_stored_path(decision["audio_path"]).is_file()


def _comparative_sample(d: dict[str, Any], job: dict[str, Any], cfg: Config) -> dict[str, Any]:
    attribute = d["attribute"]
    i, question = P.comparative_question(attribute, cfg.sft_data.seed, d["sample_id"])
    meta = {
        **record_meta(job["record"], job["split"], d["duration_s"]),
        "attribute": attribute,
        "order": d["order"],
        "params": d["params"],
        "segments": d["segments"],
        "values": d["values"],
        "phrasing": i,
    }
    return make_sample(d["sample_id"], "comparative", [d["audio_path"]], cfg.sft_data.system_prompt,
                       P.with_audio(question), P.order_target(d["order"]), d["source_id"], meta)  # fmt: skip


def _augmentation_stats(decided: Iterable[dict[str, Any]], attributes: list[str]) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = {}
    by_attr: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in decided:
        by_attr[d["attribute"]].append(d)
    for attribute in attributes:
        ds = by_attr.get(attribute, [])
        status = Counter(d["status"] for d in ds)
        verified = status["kept"] + status["dropped"]
        stats[attribute] = {
            "planned": len(ds),
            "kept": status["kept"],
            "dropped": status["dropped"],
            "skipped": status["skipped"],
            "keep_rate": round(status["kept"] / verified, 4) if verified else None,
            "drop_reasons": dict(Counter(d["reason"].split(":", 1)[0] for d in ds if d["status"] == "dropped")),
            "skip_reasons": dict(Counter(d["reason"] for d in ds if d["status"] == "skipped")),
        }
    return stats


def _prune_audio(out_dir: Path, keep: set[str]) -> int:
    """Remove wavs of earlier settings or removed sources, so the folder DVC tracks holds only this corpus."""
    removed = 0
    for path in (out_dir / AUDIO_DIR).rglob("*.wav*"):
        if stored_path(path) not in keep:
            path.unlink()
            removed += 1
    return removed


def output_lock(out: Path, cfg: Config) -> AbstractContextManager[None]:
    """One process builds an SFT corpus folder at a time (see locks.output_lock)."""
    return locks.output_lock(locks.workspace_lock(cfg.workspace, "sft_data", out), f"building the SFT corpus in {out}",
                             "the clips it rendered are then reused")  # fmt: skip


def build_sft_corpus(
    annotated: list[dict[str, Any]],
    cot: list[dict[str, Any]] | None,
    out_dir: Path,
    cfg: Config,
    *,
    enforce: bool = True,
) -> SftCorpusReport:
    """Write the stage-I/II sample files under out_dir (see module docstring) and return the report.

    enforce: raise ValidationFailed (after writing files and report) when a file's quarantine share
    exceeds validation.max_failure_rate.
    """
    t0 = time.perf_counter()
    sft = cfg.sft_data
    out_dir = absolute_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_s = max_clip_seconds(cfg)
    skipped: Counter = Counter()
    if dupes := [k for k, n in Counter(r["id"] for r in annotated).items() if n > 1]:
        raise ValueError(f"annotated records have duplicate ids (first: {dupes[:3]})")

    candidates: dict[str, dict[str, list[dict[str, Any]]]] = {s: {f: [] for f in TASKS} for s in SPLITS}
    jobs: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for rec in annotated:
        split = _split_of(rec, skipped, "record")
        if split is None:
            continue
        jobs[split] += _comparative_jobs(rec, split, out_dir, cfg, max_s, skipped)
        duration = _duration(rec)
        if not _fits(duration, max_s, skipped, "record"):
            continue
        fam = candidates[split]
        if (s := stress_sample(rec, split, duration, sft.system_prompt, sft.seed, skipped)) is not None:
            fam["stress"].append(s)
        fam["attribute"] += attribute_samples(rec, split, duration, list(sft.attribute_tasks), sft.system_prompt,
                                              sft.seed, skipped)  # fmt: skip
        if (s := asr_sample(rec, split, duration, sft.system_prompt, sft.seed, skipped)) is not None:
            fam["asr"].append(s)

    by_id = {r["id"]: r for r in annotated}
    splits_by_id = {k: r.get("split") for k, r in by_id.items()}
    for c in cot or []:
        split = splits_by_id.get(c["id"]) if sft.cot_split_from == "annotated" and c["id"] in splits_by_id else c.get("split")
        if split != c.get("split"):
            skipped["cot:split_taken_from_annotated"] += 1  # counted, not dropped: the sample follows its source
        if split not in SPLITS:
            skipped[f"cot:split_{split}"] += 1
            continue
        duration = _duration(c)
        if _fits(duration, max_s, skipped, "cot"):
            # meta (corpus, speaker, emotion) from the annotated record when there is one: CoT rows may lack corpus
            candidates[split]["cot"].append(cot_sample(c, split, duration, source=by_id.get(c["id"])))

    decisions_path = out_dir / DECISIONS_FILE
    prepare_resume(decisions_path, key="key")  # a run killed mid-line leaves a torn last line: cut it
    cache = {d["key"]: d for d in iter_jsonl(decisions_path, torn_tail=True)}  # last decision per key wins
    decided_all: list[dict[str, Any]] = []
    available: dict[str, dict[str, int]] = {}
    files: dict[str, str] = {}
    outputs: dict[str, list[dict[str, Any]]] = {}
    rendered_now = 0
    for split in SPLITS:
        fam = candidates[split]
        split_jobs = hash_order(jobs[split], sft.seed, "comparative", key="sample_id")
        avail = {f: len(fam[f]) for f in TASKS if f != "comparative"} | {"comparative": len(split_jobs)}
        _, first = plan_mixture(avail, sft.mixture, sft.max_samples)  # upper bound: every planned clip kept
        kept, decided, rendered = _render_until(split_jobs, first.get("comparative", 0), cache, decisions_path, cfg)
        decided_all += decided
        rendered_now += rendered
        job_by_key = {j["key"]: j for j in split_jobs}
        fam["comparative"] = [_comparative_sample(d, job_by_key[d["key"]], cfg) for d in kept]
        avail["comparative"] = len(kept)
        available[split] = avail
        _, quotas = plan_mixture(avail, sft.mixture, sft.max_samples)
        stage1 = []
        for f in TASKS:
            # comparative: kept clips are already in the seeded order, take the first ones
            quota = quotas.get(f, 0)  # a family the mixture does not name gets no stage-I share
            stage1 += fam[f][:quota] if f == "comparative" else select(fam[f], quota, sft.seed, f)
        outputs[f"stage1.{split}"] = hash_order(stage1, sft.seed, "shuffle")
        outputs[f"stage2.{split}"] = hash_order(fam["cot"], sft.seed, "shuffle")

    # Only the decisions this corpus rests on stay (sorted: same corpus, same bytes); the rest is pruned.
    write_jsonl(decisions_path, sorted(decided_all, key=lambda d: d["key"]))
    _prune_audio(out_dir, {d["audio_path"] for d in decided_all if d["status"] == "kept"})

    counts, seconds, quarantined, reasons, over = {}, {}, {}, Counter(), []
    checked = validate_sft_files(outputs, cfg)  # one GX run for all four files
    suite_results = next(iter(checked.values())).results
    for name in outputs:
        report = checked[name]
        path = out_dir / f"{name}.jsonl"
        write_jsonl(path, report.valid)
        write_jsonl(out_dir / f"{name}.quarantine.jsonl", report.quarantined)
        files[name] = str(path)
        counts[name] = {t: sum(s["task"] == t for s in report.valid) for t in TASKS}
        seconds[name] = round(sum(float((s.get("meta") or {}).get("duration_s") or 0.0) for s in report.valid), 3)
        quarantined[name] = len(report.quarantined)
        reasons.update(report.reasons())
        if report.failure_rate > cfg.validation.max_failure_rate:
            over.append(report)

    result = SftCorpusReport(
        out_dir=str(out_dir),
        files=files,
        counts=counts,
        available=available,
        skipped=dict(sorted(skipped.items())),
        augmentation=_augmentation_stats(decided_all, list(sft.comparative_attributes)),
        audio_seconds=seconds,
        quarantined=quarantined,
        rendered_now=rendered_now,
        wall_seconds=round(time.perf_counter() - t0, 3),
        quarantine_reasons=dict(reasons),
    )
    # wall time varies run to run, and absolute paths between checkouts: keep them out of the file, so
    # the same corpus writes the same bytes
    payload = {k: v for k, v in result.to_dict().items() if k not in ("wall_seconds", "rendered_now")}
    payload.update(out_dir=stored_path(out_dir), files={k: stored_path(v) for k, v in files.items()})
    (out_dir / REPORT_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True))
    (out_dir / VALIDATION_FILE).write_text(json.dumps(suite_results, indent=1, sort_keys=True))
    log.info("SFT corpus in %s\n%s", out_dir, result.summary())
    if enforce and over:
        worst = max(over, key=lambda r: r.failure_rate)
        raise ValidationFailed(worst.stage, worst.failure_rate, cfg.validation.max_failure_rate, worst.reasons())
    return result
