"""IEMOCAP (Busso et al. 2008), official release ``IEMOCAP_full_release``.

Audio ``Session{1..5}/sentences/wav/<dialog>/<utterance>.wav``; labels from
``Session*/dialog/EmoEvaluation/<dialog>.txt`` (consensus lines
``[start - end]\\t<utterance>\\t<label>\\t[V, A, D]``); transcripts from
``Session*/dialog/transcriptions/<dialog>.txt`` (``<utterance> [start-end]: text``).
The root may be ``IEMOCAP_full_release`` itself or the folder holding it.

Each session has one female and one male actor; the speaker of an utterance is
the letter after the last '_' (``Ses01F_script01_1_M012`` -> Ses01M).
Labels: exc (excited) joins happy as is usual for IEMOCAP; fru (frustrated),
oth and xxx (no majority) have no counterpart and are excluded and counted.

Split: Session 5 is the standard held-out test session; Session 4 is held out
for validation (model selection) and Sessions 1-3 train, so all three splits
are speaker-independent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from emotionthinker.config import Config
from emotionthinker.corpora.common import (
    Adapter, Candidate, CorpusLayoutError, Entry, Rejected, Skipped, bad_name, relpath,
)

LABELS: dict[str, str | None] = {
    "neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry",
    "sur": "surprise", "fea": "fear", "dis": "contempt or disgust",
    "fru": None, "oth": None, "xxx": None,
}
SPLITS = {1: "train", 2: "train", 3: "train", 4: "validation", 5: "test"}
EVAL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\w+)\s+(\w+)\s+\[([^\]]*)\]")
TRANSCRIPT_LINE = re.compile(r"^(Ses\w+)\s+\[[^\]]*\]:\s*(.*)$")
UTTERANCE = re.compile(r"^Ses(0[1-5])([FM])_\w+_([FM])\w*$")


def _release_root(root: Path) -> Path:
    for candidate in (root, root / "IEMOCAP_full_release"):
        if any((candidate / f"Session{i}").is_dir() for i in range(1, 6)):
            return candidate
    raise CorpusLayoutError(f"no Session1..Session5 folders under {root} (or {root}/IEMOCAP_full_release)")


def read_labels(session_dir: Path) -> dict[str, tuple[str, dict[str, float]]]:
    """utterance -> (label code, {start_s, end_s, valence, arousal, dominance}) from the consensus lines."""
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for txt in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
        if txt.name.startswith("."):
            continue
        for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
            m = EVAL_LINE.match(line.strip())
            if not m:
                continue
            start, end, utt, label, vad = m.groups()
            info = {"start_s": float(start), "end_s": float(end)}
            values = [v.strip() for v in vad.split(",")]
            if len(values) == 3:
                try:
                    info.update(zip(("valence", "arousal", "dominance"), map(float, values)))
                except ValueError:
                    pass
            out[utt] = (label.lower(), info)
    return out


def read_transcripts(session_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for txt in sorted((session_dir / "dialog" / "transcriptions").glob("*.txt")):
        if txt.name.startswith("."):
            continue
        for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
            m = TRANSCRIPT_LINE.match(line.strip())
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    release = _release_root(root)
    for session in range(1, 6):
        session_dir = release / f"Session{session}"
        if not session_dir.is_dir():
            continue
        labels = read_labels(session_dir)
        transcripts = read_transcripts(session_dir)
        wav_dir = session_dir / "sentences" / "wav"
        wavs = {p.stem: p for p in sorted(wav_dir.glob("*/*.wav")) if not p.name.startswith(".")}
        for hidden in sorted(wav_dir.glob("*/.*.wav")):
            yield Skipped("hidden", relpath(hidden, release))
        # Every labelled utterance and every wav: a label without audio is quarantined by the
        # probe (unreadable_path), audio without a label here.
        for utt in sorted(set(labels) | set(wavs)):
            path = wavs.get(utt) or wav_dir / utt.rsplit("_", 1)[0] / f"{utt}.wav"
            m = UTTERANCE.match(utt)
            if not m or int(m.group(1)) != session:
                yield bad_name(path, release, f"utterance name {utt!r} does not match Ses0{session}[FM]_<dialog>_[FM]NNN")
                continue
            if utt not in labels:
                yield Rejected(relpath(path, release), path, "no_label", "MissingLabel",
                               f"{utt} has no line in Session{session}/dialog/EmoEvaluation")
                continue
            code, info = labels[utt]
            speaker_letter = m.group(3)
            yield Candidate(
                rel_path=relpath(path, release),
                audio_path=path,
                source_label=code,
                emotion=LABELS.get(code),
                split=SPLITS[session],
                speaker=f"iemocap-Ses{m.group(1)}{speaker_letter}",
                gender="female" if speaker_letter == "F" else "male",
                transcription=transcripts.get(utt),
                extra={"session": session, "dialog": utt.rsplit("_", 1)[0],
                       "improvised": "_impro" in utt, **info},
            )


ADAPTER = Adapter(
    name="iemocap",
    layout="IEMOCAP_full_release/Session{1..5}/sentences/wav/<dialog>/<utt>.wav + dialog/EmoEvaluation + dialog/transcriptions",
    splits="by session: 1-3 train, 4 validation, 5 test",
    scan=scan,
)
