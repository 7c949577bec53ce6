"""Stressed-word detection by word position: F0 peaks above the declination line vs above the median.

    .venv/bin/python benchmarks/stress_position.py                       # ~1 min on 2 cores
    .venv/bin/python benchmarks/stress_position.py --voices en-us --strengths 30,40 --limit 10   # a quick look

1. Known emphasis. Every statement of the demo corpus's sentence list (questions left out, since a rising
   end is not an accent) is synthesised by espeak-ng once per word of four or more letters, with that
   word raised by SSML <prosody pitch="+P%" volume="+V%"> for each --strengths pair P,V; the known text
   is aligned to the audio (the annotate stage's synthesis alignment). For the two pitch baselines of
   the acoustic detector (asr.stress_pitch_baseline) it prints, by the emphasised word's position
   (first / middle / last word), how often that word has the highest prominence (top-1), how often it is
   marked stressed, and how many other words per clip are marked stressed.
2. Real speech without labels. On RAVDESS (--ravdess, default ../shared/data/ravdess; skipped when
   absent), where every clip says one of two known sentences, where each baseline puts the stressed
   words: a detector that follows the falling F0 of a statement picks the first word.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotionthinker.config import PROJECT_ROOT, AsrConfig, ProsodyConfig

BASELINES = ("declination", "median")
SR = 16000


@dataclass
class Trial:
    baseline: str
    strength: str
    position: str
    top1: bool
    stressed: bool
    others: int


def position(k: int, n: int) -> str:
    return "first" if k == 0 else "last" if k == n - 1 else "middle"


def statements() -> list[str]:
    from emotionthinker.demo.sentences import SENTENCES

    return [s for group in SENTENCES.values() for s in group if not s.rstrip().endswith("?")]


def detectors(asr: AsrConfig, prosody: ProsodyConfig) -> dict[str, object]:
    from emotionthinker.prosody.stress import AcousticProminenceDetector

    return {b: AcousticProminenceDetector(asr.model_copy(update={"stress_pitch_baseline": b}), prosody) for b in BASELINES}


def known_emphasis(voices: list[str], strengths: list[str], limit: int | None) -> list[Trial]:
    from emotionthinker.demo.espeak import find_espeak, render
    from emotionthinker.prosody.asr import get_transcriber, text_words
    from emotionthinker.prosody.f0 import track_f0

    espeak, asr, prosody = find_espeak(), AsrConfig(), ProsodyConfig()
    transcriber, dets = get_transcriber(asr), detectors(asr, prosody)
    trials: list[Trial] = []
    for strength, voice, sentence in itertools.product(strengths, voices, statements()[:limit]):
        pitch, volume = strength.split(",")
        words = text_words(sentence)
        for k, word in enumerate(words):
            if len(word.strip(".,!;:")) < 4:
                continue
            marked = " ".join(f'<prosody pitch="+{pitch}%" volume="+{volume}%">{w}</prosody>' if i == k else w
                              for i, w in enumerate(words))  # fmt: skip
            y = render([espeak, "-v", voice, "-m", "--stdout", f"<speak>{marked}</speak>"], SR).samples
            aligned = transcriber.align_known_text(y, sentence).words
            track = track_f0(y, SR, prosody)
            for baseline, det in dets.items():
                out = det.detect(y, SR, aligned, track)
                prom = np.array([p.prominence for p in out])
                trials.append(Trial(baseline, strength, position(k, len(words)), int(np.argmax(prom)) == k,
                                    out[k].stressed, sum(p.stressed for i, p in enumerate(out) if i != k)))  # fmt: skip
    return trials


def report_known(trials: list[Trial]) -> str:
    groups: dict[tuple[str, str, str], list[Trial]] = defaultdict(list)
    for t in trials:
        groups[(t.strength, t.baseline, t.position)].append(t)
        groups[(t.strength, t.baseline, "all")].append(t)
    lines = ["| emphasis (pitch %, volume %) | F0 baseline | emphasised word | clips | top-1 | marked stressed | other words marked per clip |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (strength, baseline, pos), ts in sorted(groups.items(), key=lambda kv: (kv[0][0], BASELINES.index(kv[0][1]),
                                                                                 ("first", "middle", "last", "all").index(kv[0][2]))):  # fmt: skip
        lines.append(f"| +{strength.replace(',', ', +')} | {baseline} | {pos} | {len(ts)} | {np.mean([t.top1 for t in ts]):.3f} | "
                     f"{np.mean([t.stressed for t in ts]):.3f} | {np.mean([t.others for t in ts]):.2f} |")  # fmt: skip
    return "\n".join(lines)


def ravdess_positions(root: Path, limit: int | None) -> str:
    from emotionthinker.audio import load_audio
    from emotionthinker.config import load_config
    from emotionthinker.corpora import build_manifest
    from emotionthinker.prosody.asr import get_transcriber
    from emotionthinker.prosody.f0 import track_f0
    from emotionthinker.stored_paths import absolute_path

    cfg = load_config("tiny", environ={})
    records = build_manifest("ravdess", root, cfg).records[:limit]
    transcriber, dets = get_transcriber(cfg.asr), detectors(cfg.asr, cfg.prosody)
    counts = {b: Counter() for b in BASELINES}
    for rec in records:
        y = load_audio(absolute_path(rec.audio_path), cfg.audio)
        words = transcriber.align_known_text(y, rec.transcription).words
        track = track_f0(y, SR, cfg.prosody)
        for baseline, det in dets.items():
            out = det.detect(y, SR, words, track)
            marked = [position(i, len(out)) for i, p in enumerate(out) if p.stressed]
            counts[baseline].update(marked or ["(none)"])
            counts[baseline].update(f"word: {p.word.strip('.').lower()}" for p in out if p.stressed)
    lines = [f"RAVDESS, {len(records)} clips ('Kids are talking by the door.' / 'Dogs are sitting by the door.'):",
             "| F0 baseline | first word | middle words | last word | clips with none | most marked words |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for b, c in counts.items():
        top = ", ".join(f"{k[6:]} {v}" for k, v in c.most_common() if k.startswith("word: "))
        lines.append(f"| {b} | {c['first']} | {c['middle']} | {c['last']} | {c['(none)']} | {top} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voices", default="en-us,en+f2,en-gb-x-rp+m3,en-gb-scotland+f4", help="espeak-ng voices, comma-separated")
    parser.add_argument("--strengths", nargs="+", default=["15,20", "30,40"], help="emphasis as PITCH%%,VOLUME%% pairs")
    parser.add_argument("--limit", type=int, default=None, help="first N sentences / RAVDESS clips only")
    parser.add_argument("--ravdess", type=Path, default=(PROJECT_ROOT / ".." / "shared" / "data" / "ravdess").resolve())
    args = parser.parse_args(argv)

    trials = known_emphasis(args.voices.split(","), args.strengths, args.limit)
    print(f"Known emphasis: {len(trials) // len(BASELINES)} synthesised clips, voices {args.voices}")
    print(report_known(trials))
    if args.ravdess.is_dir():
        print()
        print(ravdess_positions(args.ravdess, args.limit))
    else:
        print(f"\n{args.ravdess} not found: RAVDESS positions skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
