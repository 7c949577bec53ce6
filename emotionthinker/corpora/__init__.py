"""Corpus adapters: a corpus release on disk -> manifest records in the nine-class label space.

``build_manifest`` runs one adapter over a root, probes every clip's header and
sorts the outcome into records, exclusions (source labels with no counterpart,
counted by label), skips (files out of scope, counted by kind) and quarantine
(files found but unusable, each with a reason). ``write_manifest`` writes the
manifest and its quarantine next to it. Each adapter module documents its
corpus's release layout and the split convention it applies.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.corpora import cremad, demo, emodb, folder, iemocap, jsonl, meld, ravdess, savee, tess
from emotionthinker.corpora.common import (
    STAGE, Adapter, Candidate, CorpusLayoutError, Rejected, Skipped, UnknownCorpusError, rejected_record, to_record,
)
from emotionthinker.labels import LABELS
from emotionthinker.records import ManifestRecord, QuarantineRecord, write_jsonl
from emotionthinker.stored_paths import absolute_path

__all__ = [
    "ADAPTERS", "Adapter", "CorpusLayoutError", "ManifestResult", "UnknownCorpusError",
    "build_manifest", "format_summary", "quarantine_path", "write_manifest",
]

log = logging.getLogger(__name__)

ADAPTERS: dict[str, Adapter] = {
    m.ADAPTER.name: m.ADAPTER for m in (ravdess, emodb, iemocap, meld, savee, cremad, tess, jsonl, folder, demo)
}


@dataclass
class ManifestResult:
    records: list[ManifestRecord]
    excluded: Counter[str]  # source label -> clips excluded because the label has no counterpart
    quarantined: list[QuarantineRecord]  # found but unusable at manifest time, stage="manifest"
    skipped: Counter[str] = field(default_factory=Counter)  # out of scope by design (e.g. RAVDESS song)
    corpus: str = ""
    root: str = ""

    def summary(self) -> dict[str, Any]:
        by_emotion = Counter(r.emotion for r in self.records)
        return {
            "corpus": self.corpus,
            "root": self.root,
            "records": len(self.records),
            "by_split": dict(sorted(Counter(r.split for r in self.records).items())),
            "by_emotion": {label: by_emotion[label] for label in LABELS if by_emotion[label]},
            "excluded": dict(sorted(self.excluded.items())),
            "excluded_total": sum(self.excluded.values()),
            "skipped": dict(sorted(self.skipped.items())),
            "quarantined": len(self.quarantined),
            "quarantine_reasons": dict(sorted(Counter(q.reason for q in self.quarantined).items())),
        }


def get_adapter(corpus: str) -> Adapter:
    try:
        return ADAPTERS[corpus]
    except KeyError:
        raise UnknownCorpusError(f"unknown corpus {corpus!r}; choose one of {', '.join(ADAPTERS)}") from None


def build_manifest(corpus: str, root: Path, cfg: Config) -> ManifestResult:
    """Scan root with the corpus's adapter; raise CorpusLayoutError when nothing of the corpus is there."""
    adapter = get_adapter(corpus)
    root = absolute_path(root)
    if not root.exists():
        raise CorpusLayoutError(f"{corpus} root {root} does not exist")
    kept: list[tuple[str, ManifestRecord]] = []
    quarantined: list[tuple[str, QuarantineRecord]] = []
    excluded: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    found = 0
    for entry in adapter.scan(root, cfg):
        found += 1
        if isinstance(entry, Skipped):
            skipped[entry.kind] += 1
            continue
        if isinstance(entry, Candidate) and entry.emotion is None:
            excluded[entry.source_label] += 1
            continue
        rec = rejected_record(corpus, entry) if isinstance(entry, Rejected) else to_record(corpus, entry, cfg)
        if isinstance(rec, ManifestRecord) and rec.id in seen:
            # The same clip listed twice (metadata files): keep the first, quarantine the rest.
            rec = QuarantineRecord(id=rec.id, audio_path=rec.audio_path, stage=STAGE, reason="duplicate",
                                   error_type="DuplicateRecord", corpus=corpus, relative_path=entry.rel_path,
                                   detail=f"{entry.rel_path} is listed more than once")
        elif isinstance(rec, ManifestRecord):
            seen.add(rec.id)
            kept.append((entry.rel_path, rec))
            continue
        quarantined.append((entry.rel_path, rec))
    if found == 0:
        raise CorpusLayoutError(f"no {corpus} files found under {root}; expected {adapter.layout}")
    result = ManifestResult(
        records=[r for _, r in sorted(kept, key=lambda t: (t[0], t[1].id))],
        excluded=excluded,
        quarantined=[q for _, q in sorted(quarantined, key=lambda t: (t[0], t[1].id, t[1].reason))],
        skipped=skipped,
        corpus=corpus,
        root=str(root),
    )
    log.info("%s manifest: %s", corpus, result.summary())
    return result


def quarantine_path(out: Path) -> Path:
    """``manifest.jsonl`` -> ``manifest.quarantine.jsonl``."""
    return Path(out).with_suffix(".quarantine.jsonl")


def write_manifest(result: ManifestResult, out: Path) -> dict[str, Any]:
    """Write the manifest and its quarantine (always, so no stale quarantine survives); return the summary."""
    out = Path(out)
    write_jsonl(out, result.records)
    write_jsonl(quarantine_path(out), result.quarantined)
    summary = {**result.summary(), "manifest": str(out), "quarantine": str(quarantine_path(out))}
    log.info(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines: counts, exclusions by source label, quarantine by reason."""
    def fmt(d: dict[str, int]) -> str:
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "none"

    lines = [
        f"{summary['corpus']}: {summary['records']} records ({fmt(summary['by_split'])})",
        f"  emotions: {fmt(summary['by_emotion'])}",
        f"  excluded (no counterpart): {summary['excluded_total']} ({fmt(summary['excluded'])})",
        f"  skipped (out of scope): {sum(summary['skipped'].values())} ({fmt(summary['skipped'])})",
        f"  quarantined: {summary['quarantined']} ({fmt(summary['quarantine_reasons'])})",
    ]
    if "manifest" in summary:
        lines.append(f"  wrote {summary['manifest']} and {summary['quarantine']}")
    return "\n".join(lines)
