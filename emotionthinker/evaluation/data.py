"""What an evaluation runs on: benchmarks, record selection and the version of the evaluated data.

A benchmark is a corpus plus the split the paper's protocol evaluates: IEMOCAP and MELD on their test
sets; RAVDESS and SAVEE zero-shot on the whole corpus (no clip of theirs is trained on in the paper);
EmoDB and CREMA-D on their speaker-independent test split; TESS (two speakers, split by word) on its
test split. Any other manifest evaluates every record (or `split`) under its own name.

`eval_data_version` names exactly the evaluated records (sha1 over sorted id, gold label, audio
path), so two evaluations compare (promotion gate) only when they scored the same clips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.errors import InputError
from emotionthinker.records import iter_jsonl
from emotionthinker.stored_paths import absolute_path


class EvalDataError(InputError):
    """The evaluation data cannot be selected (unknown benchmark, empty selection, missing manifest)."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str  # column heading (paper spelling)
    corpus: str  # corpus adapter
    split: str | None  # None: every record (zero-shot protocol)
    in_paper: bool  # a column of the paper's Table 2


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("iemocap", "IEMOCAP", "iemocap", "test", True),
        Benchmark("meld", "MELD", "meld", "test", True),
        Benchmark("ravdess", "RAVDESS", "ravdess", None, True),
        Benchmark("savee", "SAVEE", "savee", None, True),
        Benchmark("emodb", "EmoDB", "emodb", "test", False),
        Benchmark("cremad", "CREMA-D", "cremad", "test", False),
        Benchmark("tess", "TESS", "tess", "test", False),
    )
}
PAPER_BENCHMARKS: tuple[str, ...] = tuple(b.name for b in BENCHMARKS.values() if b.in_paper)


@dataclass
class EvalData:
    benchmark: str
    records: list[dict[str, Any]]
    manifest: Path
    split: str | None
    eval_data_version: str
    data_version: dict[str, str] = field(default_factory=dict)  # dataset -> md5/sha1 (tracking tags)
    limit: int | None = None

    def summary(self) -> dict[str, Any]:
        from collections import Counter

        return {
            "benchmark": self.benchmark, "manifest": str(self.manifest), "split": self.split or "all",
            "n": len(self.records), "by_emotion": dict(Counter(r["emotion"] for r in self.records)),
            "eval_data_version": self.eval_data_version,
        }  # fmt: skip


def records_sha1(records: list[dict[str, Any]]) -> str:
    rows = sorted((str(r["id"]), str(r["emotion"]), str(r["audio_path"])) for r in records)
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()


def manifest_data_version(manifest: Path) -> dict[str, str]:
    """sha1 of the manifest file; the DVC md5 too when its folder is DVC-tracked (ingest layout)."""
    from emotionthinker.versioning import VersioningError, read_dvc_md5

    version = {"eval_manifest_sha1": hashlib.sha1(manifest.read_bytes()).hexdigest()}
    for pointer in (manifest.with_name(manifest.name + ".dvc"), manifest.parent.with_name(manifest.parent.name + ".dvc")):
        if pointer.is_file():
            try:
                version["eval_manifest_dvc_md5"] = read_dvc_md5(pointer)
            except (VersioningError, OSError, ValueError):
                pass
            break
    return version


def build_benchmark_manifest(name: str, root: Path, out: Path, cfg: Config) -> Path:
    """Run the benchmark's corpus adapter over `root` and write the manifest (its quarantine beside it)."""
    from emotionthinker.corpora import build_manifest, write_manifest

    bench = get_benchmark(name)
    if not root.is_dir():
        raise EvalDataError(f"benchmark {name}: corpus folder {root} not found (pass --root or --manifest)")
    write_manifest(build_manifest(bench.corpus, root, cfg), out)
    return out


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise EvalDataError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (or omit it)") from None


def select_eval_data(
    manifest: str | Path,
    benchmark: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> EvalData:
    """Records of `manifest` that the benchmark protocol evaluates (`split` overrides; 'all' = every record).

    Without a benchmark the name is the manifest's corpus (when it holds one) or its file stem.
    """
    from emotionthinker.labels import LABELS

    path = absolute_path(manifest)
    if not path.is_file():
        raise EvalDataError(f"manifest not found: {path}")
    records = list(iter_jsonl(path))
    if not records:
        raise EvalDataError(f"{path} holds no records")
    bad = [r.get("id", "?") for r in records if r.get("emotion") not in LABELS or not r.get("audio_path") or not r.get("id")]
    if bad:
        raise EvalDataError(f"{path}: {len(bad)} records without id, audio_path or a label of the label space (first: {bad[:3]})")
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise EvalDataError(f"{path}: duplicate record ids")
    if benchmark:
        bench = get_benchmark(benchmark)
        name, default_split = bench.name, bench.split
    else:
        corpora = {r.get("corpus") for r in records}
        name = corpora.pop() if len(corpora) == 1 and None not in corpora else path.stem
        default_split = None
    chosen = split if split is not None else default_split
    if chosen and chosen != "all":
        records = [r for r in records if r.get("split") == chosen]
        if not records:
            raise EvalDataError(f"{path}: no records in split {chosen!r} (the {name} protocol); pass --split all")
    if limit:
        records = records[:limit]
    return EvalData(
        benchmark=name,
        records=records,
        manifest=path,
        split=None if chosen in (None, "all") else chosen,
        eval_data_version=f"{name}-{records_sha1(records)[:16]}",
        data_version=manifest_data_version(path),
        limit=limit or None,
    )


def eval_root(cfg: Config) -> Path:
    return cfg.stage_dir(cfg.eval.output_dir, "evaluation")
