"""Batched evaluation against one clip at a time, same model, same clips, same greedy decoding.

    .venv/bin/python benchmarks/eval_batching.py [--profile tiny|test] [--model SOURCE] [--clips N]
                                                 [--batch-size B] [--max-new-tokens T] [--threads 2] [--strict]

Both runs go through emotionthinker.evaluation.predict.predict_records (the evaluate flow's
prediction step) into fresh folders, after one warm-up call; the batched run sorts clips by duration
(as the flow does), the sequential one answers them one by one. Prints wall-clock and CPU seconds of
each, generated tokens, the speed-up (sequential / batched) and how many answers agree. Clips: the
RAVDESS clips of ../shared/data (else a synthesised demo corpus). Model: --model, else the registered
policy/base (champion, newest challenger), else models.policy_source (packaged:tiny-base on `tiny`).
Target (issue 7): batched >= 3x faster on 2 cores for the `tiny` model. The machine may be shared:
the load average is printed, and the CPU-seconds ratio is the steadier number. Exit 0 unless --strict
and the wall-clock ratio misses the target.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

TARGET = 3.0


def _clips(cfg, n: int, tmp: Path) -> list[dict]:
    from emotionthinker.corpora import build_manifest

    ravdess = cfg.shared_data_dir / "ravdess"
    if ravdess.is_dir():
        records = [r.model_dump(mode="json") for r in build_manifest("ravdess", ravdess, cfg).records]
    else:
        from emotionthinker.democorpus import synthesize_demo_corpus

        metadata = synthesize_demo_corpus(tmp / "demo", cfg)
        records = [r.model_dump(mode="json") for r in build_manifest("demo", metadata.parent, cfg).records]
    # Spread over the corpus (every k-th clip) so both emotions and speakers vary.
    step = max(1, len(records) // n)
    return records[::step][:n]


def _model_source(cfg, given: str | None) -> str:
    if given:
        return given
    from emotionthinker.evaluation.infer import NoModelError, default_model_source

    try:
        return default_model_source(cfg)
    except (NoModelError, Exception):  # noqa: BLE001 - no registry: fall back to the configured backbone
        return cfg.models.policy_source


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--model", default=None)
    ap.add_argument("--clips", type=int, default=None, help="default 16 (tiny), 8 (test)")
    ap.add_argument("--batch-size", type=int, default=None, help="default eval.batch_size, at most --clips")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default models.max_new_tokens")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2 cores)")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from emotionthinker.config import load_config
    from emotionthinker.evaluation.predict import predict_records
    from models.backbone import AudioLM

    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile)
    n = args.clips or (8 if args.profile == "test" else 16)
    batch = min(args.batch_size or cfg.eval.batch_size, n)
    max_new = args.max_new_tokens or cfg.models.max_new_tokens
    source = _model_source(cfg, args.model)
    with tempfile.TemporaryDirectory(prefix="et-eval-batching-") as tmp_name:
        tmp = Path(tmp_name)
        records = _clips(cfg, n, tmp)
        lm = AudioLM.from_source(source, cfg)
        print(f"model {source} ({lm.family}, {lm.num_parameters() / 1e6:.1f}M parameters), {len(records)} clips, "
              f"batch {batch}, max_new_tokens {max_new}, torch threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)  # fmt: skip
        predict_records(lm, records[:1], cfg, tmp / "warmup", batch_size=1, max_new_tokens=max_new)

        results = {}
        for name, bs, sort in (("batched", batch, True), ("one-at-a-time", 1, False)):
            w0, c0 = time.perf_counter(), cpu_seconds()
            res = predict_records(lm, records, cfg, tmp / name, batch_size=bs, max_new_tokens=max_new, sort_by_length=sort)
            wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
            tokens = sum(r["n_tokens"] for r in res.rows)
            results[name] = (wall, cpu, res.rows)
            print(f"{name:>14}: {wall:7.1f} s wall, {cpu:7.1f} s CPU, {tokens} tokens generated "
                  f"({tokens / wall:.1f} tokens/s), {len(res.rows) / wall:.2f} clips/s; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    (bw, bc, brows), (sw, sc, srows) = results["batched"], results["one-at-a-time"]
    agree = sum(a["output"] == b["output"] for a, b in zip(brows, srows)) / len(brows)
    same_label = sum(a["predicted"] == b["predicted"] for a, b in zip(brows, srows)) / len(brows)
    ratio = sw / bw
    print(f"speed-up batched vs one at a time: {ratio:.2f}x wall, {sc / bc:.2f}x CPU (target >= {TARGET:.0f}x); "
          f"identical outputs {agree:.0%}, same parsed answer {same_label:.0%}")  # fmt: skip
    return 1 if args.strict and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
