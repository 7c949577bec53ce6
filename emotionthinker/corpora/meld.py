"""MELD (Poria et al. 2019), release ``MELD.Raw``: per-split CSVs and one mp4 clip per utterance.

``{train,dev,test}_sent_emo.csv`` (columns Sr No., Utterance, Speaker, Emotion,
Sentiment, Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime) and
clips ``train_splits/``, ``dev_splits_complete/``, ``output_repeated_splits_test/``
named ``dia{D}_utt{U}.mp4``. Both are looked up at the root and one folder down
(the tarballs unpack as ``train/train_splits`` etc.).

The audio track of each clip is extracted once with PyAV to 16 kHz mono wav under
``<cache>/meld-audio/<root digest>/<split>/``; a wav newer than its clip is reused.
A missing clip, a clip without an audio stream or one FFmpeg cannot decode is
quarantined with its reason. Official splits: train / dev (-> validation) / test.
MELD speakers are character names; their gender is not in the release ('unknown').
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from emotionthinker.audio import AudioDecodeError, AudioError, AudioNotFoundError, EmptyAudioError
from emotionthinker.config import Config
from emotionthinker.corpora.common import Adapter, Candidate, CorpusLayoutError, Entry, Rejected, relpath
from emotionthinker.labels import normalize_label

log = logging.getLogger(__name__)

SPLITS: dict[str, tuple[str, str, str]] = {  # split -> (csv name, clip folder, MELD's split name)
    "train": ("train_sent_emo.csv", "train_splits", "train"),
    "validation": ("dev_sent_emo.csv", "dev_splits_complete", "dev"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test", "test"),
}
EXTRA_COLUMNS = {"Sentiment": "sentiment", "Season": "season", "Episode": "episode",
                 "StartTime": "start_time", "EndTime": "end_time"}


class NoAudioStreamError(AudioDecodeError):
    reason = "no_audio_stream"


def _find(root: Path, name: str) -> Path | None:
    """``root/name`` or ``root/<one folder>/name``: MELD's tarballs nest differently across mirrors."""
    if (root / name).exists():
        return root / name
    hits = sorted(p for p in root.glob(f"*/{name}"))
    return hits[0] if hits else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # some mirrors re-saved the CSVs as Windows-1252
        text = raw.decode("cp1252", errors="replace")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _clean_text(text: str) -> str:
    """Undo the UTF-8-read-as-cp1252 mojibake of the release (``â€™`` -> ``’``) where it round-trips."""
    if "â" in text or "Ã" in text:
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return " ".join(text.split())


def _row_extras(row: dict[str, str]) -> dict[str, str]:
    out = {key: (row.get(col) or "").strip() for col, key in EXTRA_COLUMNS.items() if col in row}
    if "sentiment" in out:
        out["sentiment"] = out["sentiment"].lower()
    return out


def extract_audio(clip: Path, wav: Path, sample_rate: int) -> Path:
    """Decode the clip's first audio stream to mono wav at sample_rate (atomic write); reuse a fresh wav."""
    if not clip.is_file():
        raise AudioNotFoundError(clip, "clip not found")
    if wav.is_file() and wav.stat().st_mtime >= clip.stat().st_mtime:
        return wav
    import av  # lazy: only MELD needs FFmpeg

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(clip)) as container:
            if not container.streams.audio:
                raise NoAudioStreamError(clip, "the clip has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except AudioError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AudioDecodeError(clip, f"FFmpeg cannot decode it ({exc})") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise EmptyAudioError(clip, "the audio stream decoded to zero samples")
    wav.parent.mkdir(parents=True, exist_ok=True)
    tmp = wav.with_name(wav.name + ".part")
    sf.write(tmp, np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, wav)
    return wav


def scan(root: Path, cfg: Config) -> Iterator[Entry]:
    found = {split: _find(root, names[0]) for split, names in SPLITS.items()}
    if not any(found.values()):
        raise CorpusLayoutError(f"none of {', '.join(n[0] for n in SPLITS.values())} found under {root}")
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    cache = cfg.cache_dir / "meld-audio" / digest
    extracted = 0
    for split, (csv_name, clip_dir_name, meld_split) in SPLITS.items():
        csv_path = found[split]
        if csv_path is None:
            log.warning("MELD %s: %s not found under %s, split skipped", meld_split, csv_name, root)
            continue
        clip_dir = _find(root, clip_dir_name) or root / clip_dir_name
        for row in _read_csv(csv_path):
            dia, utt = (row.get("Dialogue_ID") or "").strip(), (row.get("Utterance_ID") or "").strip()
            name = f"dia{dia}_utt{utt}"
            clip = clip_dir / f"{name}.mp4"
            rel = relpath(clip, root)
            source = (row.get("Emotion") or "").strip().lower()
            if not (dia.isdigit() and utt.isdigit()):
                yield Rejected(rel, clip, "bad_metadata", "BadMetadata",
                               f"{csv_name} row {row.get('Sr No.')!r} has no integer Dialogue_ID/Utterance_ID",
                               source_label=source)
                continue
            emotion = normalize_label(source)
            if emotion is None:  # excluded rows need no audio
                yield Candidate(rel, clip, source, None, split, "unknown")
                continue
            try:
                wav = extract_audio(clip, cache / meld_split / f"{name}.wav", cfg.audio.sample_rate)
            except AudioError as err:
                yield Rejected(rel, clip, err.reason, type(err).__name__, err.detail, source_label=source)
                continue
            extracted += 1
            if extracted % 500 == 0:
                log.info("MELD: %d clips ready (audio cached under %s)", extracted, cache)
            speaker = " ".join((row.get("Speaker") or "").split()) or "unknown"
            yield Candidate(
                rel_path=rel,
                audio_path=wav,
                source_label=source,
                emotion=emotion,
                split=split,
                speaker=f"meld-{speaker}",
                gender="unknown",
                transcription=_clean_text(row.get("Utterance") or "") or None,
                extra={"video_path": str(clip), "dialogue_id": int(dia), "utterance_id": int(utt), **_row_extras(row)},
            )


ADAPTER = Adapter(
    name="meld",
    layout="MELD.Raw: {train,dev,test}_sent_emo.csv + train_splits/, dev_splits_complete/, output_repeated_splits_test/ dia{D}_utt{U}.mp4",
    splits="official: train / dev -> validation / test",
    scan=scan,
)
