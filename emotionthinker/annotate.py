"""Prosody annotation (EmotionCoT stage 1): manifest records -> annotated records.

Two passes, because levels are calibrated over the whole annotated set:
1. measure every clip (decode, F0, energy, rate, intonation, word timings,
   stress, traits) in a process pool, streaming each result to
   ``<out>.measures.jsonl`` as it finishes; a rerun after a kill skips the ids
   already there, so no clip is measured twice and none is lost. Only under the
   same settings (``<out>.settings.json``: the config that shapes a measure, ASR
   on/off, the measuring code, the gender model where a clip needs it): a rerun
   after a settings change measures every clip again instead of keeping stale ones;
2. fit (or load) the per-corpus calibration, assign pitch/energy/speed levels
   and write ``<out>`` atomically. Pass 2 is cheap and deterministic.
Unusable clips go to ``<out>.quarantine.jsonl`` with their reason. At the end both
streams are rewritten in manifest order: they are part of the versioned output,
whose bytes must not depend on the order in which pool workers finished.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker import locks
from emotionthinker.clip_annotation import measure_or_quarantine, quarantine_record
from emotionthinker.config import Config
from emotionthinker.prosody.levels import (
    Calibration, assign_levels, calibration_gender, fit_calibration_from_records, load_reference_calibration,
)
from emotionthinker.records import (
    append_jsonl, check_ids, iter_jsonl, prepare_resume, read_input_jsonl, reason_code, sort_jsonl,
    write_jsonl, write_text_atomic,
)  # fmt: skip

log = logging.getLogger(__name__)


@dataclass
class AnnotateReport:
    out: Path
    measures: Path
    quarantine: Path
    calibration: Path
    n_input: int
    n_annotated: int
    n_quarantined: int
    n_resumed: int  # clips found already measured by an earlier (killed) run
    audio_seconds: float
    wall_seconds: float
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def speed_text(self) -> str:
        # A rerun that resumed every clip measured nothing: "0x real time" would read as a stall.
        return f"{self.realtime_factor:.0f}x real time" if self.audio_seconds > 0 else "no clip measured"


# Code that decides a clip's measures (pass 1), relative to this package: part of the resume settings.
_MEASURE_CODE = ("clip_annotation.py", "audio.py", "prosody", "traits")
_PASS_TWO_CODE = {"prosody/levels.py"}  # levels are recalibrated on every run
# Fields that change only speed or pass 2 (levels are recalibrated on every run): no reason to re-measure.
_NOT_MEASURES = {"prosody": {"workers", "min_group_size", "min_batch_group_size"}, "asr": {"cpu_threads", "local_files_only"}}


def measure_code_files() -> list[Path]:
    """The modules that decide a clip's measures, sorted: not this one (resume, pool, locks, pass 2)."""
    package = Path(__file__).parent
    return sorted(f for name in _MEASURE_CODE for f in ((package / name).rglob("*.py") if (package / name).is_dir()
                                                         else [package / name])
                  if f.relative_to(package).as_posix() not in _PASS_TWO_CODE)  # fmt: skip


@functools.lru_cache(maxsize=1)
def measure_code_digest() -> str:
    package = Path(__file__).parent
    digest = hashlib.sha1()
    for f in measure_code_files():
        digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def gender_model_setting(cfg: Config, records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The gender model decides the traits (and pitch calibration) of clips without a corpus gender; its
    alias can move without any config change, so the model it resolves to is a setting then."""
    if all(calibration_gender(r) != "unknown" for r in records):
        return {}
    from emotionthinker.traits.gender import gender_model_identity

    return {"gender_model": gender_model_identity(cfg)}


def measure_settings(cfg: Config, use_asr: bool, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What decides the measures of these records: streamed measures are reused only under equal settings."""
    sections = {name: getattr(cfg, name).model_dump(mode="json", exclude=_NOT_MEASURES.get(name, set()))
                for name in ("audio", "prosody", "asr", "traits")}  # fmt: skip
    return {**sections, "use_asr": use_asr, "code": measure_code_digest(), **gender_model_setting(cfg, records)}


def _restart_unless_same_settings(path: Path, settings: dict[str, Any], streams: tuple[Path, ...]) -> list[str]:
    """Drop streamed results made under other (or unrecorded) settings; returns what differed, [] when resuming."""
    try:
        previous = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        previous = None
    if previous == settings:
        return []
    changed = ["no settings recorded"] if not isinstance(previous, dict) else sorted(
        k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k))  # fmt: skip
    stale = [s for s in streams if s.is_file() and s.stat().st_size]
    for stream in streams:
        stream.unlink(missing_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return changed if stale else []


def annotated_paths(out: Path) -> tuple[Path, Path, Path]:
    """Side files of an annotation output: streamed measures, quarantine, calibration."""
    stem = out.with_suffix("")
    return (
        stem.with_name(stem.name + ".measures.jsonl"),
        stem.with_name(stem.name + ".quarantine.jsonl"),
        stem.with_name(stem.name + ".calibration.json"),
    )


def settings_path(out: Path) -> Path:
    """The measure settings of an annotation output (see the module docstring)."""
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".settings.json")


# Process-pool workers receive the config once (initializer), not per clip.
_WORKER_CFG: Config | None = None
# Clips queued per spawned worker: enough that a worker never idles while the parent, which
# hands out work between clips of its own, is busy measuring one.
_QUEUED_PER_WORKER = 4


def _init_worker(cfg_json: str) -> None:
    global _WORKER_CFG
    # One clip per core: no library may start a thread pool of its own. The variables reach
    # libraries imported from here on (torch, ctranslate2); BLAS is already loaded, so limit it directly.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    _WORKER_CFG = Config.model_validate_json(cfg_json)


def _worker(record: dict[str, Any], use_asr: bool) -> tuple[str, dict[str, Any]]:
    assert _WORKER_CFG is not None
    return measure_or_quarantine(record, _WORKER_CFG, use_asr)


def _ready() -> int:
    return os.getpid()


def _measure_stream(
    records: list[dict[str, Any]], cfg: Config, workers: int, use_asr: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield results as they finish, with ``workers`` processes: this one and ``workers - 1`` spawned.

    A spawned worker spends its first seconds importing numpy, scipy and parselmouth; on a
    2-core machine that is as long as measuring a few hundred clips. So the parent measures
    clips itself from the first moment and hands clips to the pool only once a worker has
    answered a ping: until then every clip is the parent's, and a batch that the parent
    finishes alone does not wait for the pool at all. At most _QUEUED_PER_WORKER clips per
    worker are in flight (bounded memory); when the queue runs dry the parent takes back
    the clips no worker has started, so the run does not end waiting on a worker's backlog.
    """
    queue = deque(records)
    if workers <= 1 or len(queue) <= 1:
        while queue:
            yield measure_or_quarantine(queue.popleft(), cfg, use_asr)
        return
    import multiprocessing as mp

    n_spawned = workers - 1
    ctx = mp.get_context("spawn")  # fork after torch/ctranslate2 threads start can deadlock
    pool = ProcessPoolExecutor(n_spawned, mp_context=ctx, initializer=_init_worker, initargs=(cfg.model_dump_json(),))
    ready = False
    try:
        pings = [pool.submit(_ready) for _ in range(n_spawned)]
        pending: dict[Future, dict[str, Any]] = {}
        while queue or pending:
            if not ready:
                ready = any(p.done() and p.result() for p in pings)  # result() raises if the pool broke
            while ready and queue and len(pending) < _QUEUED_PER_WORKER * n_spawned:
                rec = queue.popleft()
                pending[pool.submit(_worker, rec, use_asr)] = rec
            for f in [f for f in pending if f.done()]:
                del pending[f]
                yield f.result()
            if not queue:
                # Clips still waiting for a worker come back to the parent (cancel() fails once one has started).
                queue.extend(pending.pop(f) for f in list(pending) if f.cancel())
            if queue:
                yield measure_or_quarantine(queue.popleft(), cfg, use_asr)
            elif pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    del pending[f]
                    yield f.result()
    finally:
        # Workers still importing when the parent finished alone exit on their own; nobody waits for them.
        pool.shutdown(wait=ready, cancel_futures=True)


class _LineAppender:
    """Streams JSON lines to a file: each line is flushed to the OS at once, so a killed run
    (SIGKILL included) keeps every finished record; fsync, which costs milliseconds per call
    and only protects against a power cut, runs at most every FSYNC_INTERVAL_S and on close."""

    FSYNC_INTERVAL_S = 2.0

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._synced = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        if time.monotonic() - self._synced > self.FSYNC_INTERVAL_S:
            os.fsync(self._fh.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


# -- pass 2: levels ------------------------------------------------------------


def apply_levels(measured: Iterable[dict[str, Any]], calibration: Calibration) -> Iterator[tuple[str, dict[str, Any]]]:
    """Attach calibrated levels; a clip whose level cannot be ranked is quarantined, not guessed."""
    for rec in measured:
        levels, used = assign_levels(rec["prosody"], rec["corpus"], calibration_gender(rec), calibration)
        if levels.get("pitch_level") is None and not rec["prosody"].get("f0_median_hz"):
            # Whispered or unvoiced speech has no F0 to rank: say so rather than guess a level.
            levels["pitch_level"] = "unknown"
        missing = [k for k, v in levels.items() if v is None]
        if missing:
            yield "quarantine", quarantine_record(rec, "unmeasurable_level", "LevelError", f"no measure for {', '.join(missing)}")
            continue
        out = dict(rec)
        out["annotations"] = {**rec["annotations"], **levels}  # levels last: re-labelling a labelled record must take the new ones
        out["prosody"] = {**rec["prosody"], "calibration": used}
        yield "ok", out


def annotate_manifest(
    manifest: Path | Iterable[dict[str, Any]],
    out: Path,
    cfg: Config,
    *,
    use_asr: bool = True,
    calibration: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> AnnotateReport:
    """Annotate every record of a manifest; resumable and idempotent (see module docstring)."""
    t0 = time.perf_counter()
    out = Path(out)
    measures_path, quarantine_path, calib_path = annotated_paths(out)
    records = read_input_jsonl(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    if limit is not None:
        records = records[:limit]
    ids = check_ids(records, str(manifest) if isinstance(manifest, (str, Path)) else "manifest")
    given = Calibration.load(calibration) if calibration is not None else None  # before hours of measuring
    changed = _restart_unless_same_settings(settings_path(out), measure_settings(cfg, use_asr, records),
                                            (measures_path, quarantine_path))  # fmt: skip
    if changed:
        log.warning("annotate: %s holds results made under other settings (%s): measuring every clip again",
                    measures_path.parent, ", ".join(changed))  # fmt: skip
    measured_ids = prepare_resume(measures_path)
    quarantined_ids = prepare_resume(quarantine_path)
    todo = [r for r in records if r["id"] not in measured_ids and r["id"] not in quarantined_ids]
    n_resumed = len(records) - len(todo)
    workers = workers if workers is not None else (cfg.prosody.workers or os.cpu_count() or 1)
    workers = max(1, min(workers, len(todo) or 1))

    bar = _progress(len(todo), progress)
    audio_s = 0.0
    measures_out, quarantine_out = _LineAppender(measures_path), _LineAppender(quarantine_path)
    try:
        for status, rec in _measure_stream(todo, cfg, workers, use_asr):
            if status == "ok":
                measures_out.write(rec)
                audio_s += float(rec["prosody"].get("duration_s") or 0.0)
            else:
                quarantine_out.write(rec)
            bar.update(1)
    finally:
        measures_out.close()
        quarantine_out.close()
        bar.close()

    wanted = set(ids)
    # First record per id: one output row per clip, whatever the stream holds.
    measured = list({r["id"]: r for r in reversed(list(iter_jsonl(measures_path, torn_tail=True))) if r["id"] in wanted}.values())
    annotated: list[dict[str, Any]] = []
    if given is not None:
        calib: Calibration | None = given
    elif measured:
        calib = fit_calibration_from_records(measured, cfg, reference=load_reference_calibration())
    else:  # every clip quarantined: nothing to calibrate; the failure rate stops the flow
        calib = None
    if calib is not None:
        calib.save(calib_path)
    for status, rec in apply_levels(measured, calib) if calib is not None else ():
        if status == "ok":
            annotated.append(rec)
        elif rec["id"] not in quarantined_ids:
            append_jsonl(quarantine_path, rec)
            quarantined_ids.add(rec["id"])
    order = {k: i for i, k in enumerate(ids)}
    annotated.sort(key=lambda r: order[r["id"]])
    write_jsonl(out, annotated)
    for stream in (measures_path, quarantine_path):  # they sit in the versioned folder beside `out`
        sort_jsonl(stream, ids)
    done = {r["id"] for r in annotated}
    # A clip quarantined by an earlier calibration and annotated now counts once, as annotated.
    # One entry per id (the latest): a rerun may have quarantined the same clip again.
    quarantined = list({q["id"]: q for q in iter_jsonl(quarantine_path, torn_tail=True) if q["id"] in wanted and q["id"] not in done}.values())
    return AnnotateReport(
        out=out,
        measures=measures_path,
        quarantine=quarantine_path,
        calibration=calib_path,
        n_input=len(records),
        n_annotated=len(annotated),
        n_quarantined=len(quarantined),
        n_resumed=n_resumed,
        audio_seconds=audio_s,
        wall_seconds=time.perf_counter() - t0,
        quarantine_by_reason=dict(Counter(reason_code(q["reason"]) for q in quarantined)),
    )


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="annotate", unit="clip", disable=not enabled or total == 0, mininterval=1.0)


def output_lock(out: Path, cfg: Config) -> AbstractContextManager[None]:
    """One annotate run writes an output at a time (see locks.output_lock)."""
    return locks.output_lock(locks.workspace_lock(cfg.workspace, "annotate", out), f"annotating into {out}",
                             "the clips it measured are then reused")  # fmt: skip


def annotation_dir(cfg: Config, manifest: Path) -> Path:
    """<data>/annotated/<name>/, named after the manifest's dataset folder (its corpus)."""
    name = manifest.parent.name if manifest.stem == "manifest" else manifest.stem
    return cfg.data_dir / "annotated" / name


def finalize_validated(report: AnnotateReport, validation: Any, cfg: Config) -> Exception | None:
    """Keep only rows that passed validation in the output, move the others to the quarantine,
    and return the error that stops the flow when too many clips failed (None otherwise)."""
    from emotionthinker.validation import ValidationFailed

    if validation.quarantined:
        write_jsonl(report.out, validation.valid)
        # A rerun validates the same rows again: a clip already quarantined for the same reason is not repeated.
        known = {(q["id"], q["stage"], q["reason"]) for q in iter_jsonl(report.quarantine, torn_tail=True)}
        for q in validation.quarantined:
            if (q.id, q.stage, q.reason) not in known:
                append_jsonl(report.quarantine, q)
    failures = report.n_quarantined + len(validation.quarantined)
    rate = failures / report.n_input if report.n_input else 0.0
    if rate > cfg.validation.max_failure_rate:
        reasons = Counter(report.quarantine_by_reason) + validation.reasons()
        return ValidationFailed("annotate", rate, cfg.validation.max_failure_rate, reasons)
    return None
