"""Step time of GRPO-PTR against plain GRPO at the same batch, measured in one run.

    .venv/bin/python benchmarks/grpo_step.py [--profile test|tiny] [--reps 6] [--batch 8] [--k 4]
                                             [--max-completion-length 32] [--policy SOURCE] [--reward SOURCE]
                                             [--threads N] [--free-rm-decoding] [--strict]

GRPO-PTR with R_t on (the steady state after the progressive switch) pays for reward-model scoring
and the trust weight on top of what plain GRPO does: sampling, R_f/R_o, the reference forward and the
update. Both trainers share one policy and one frozen reference, see the same prompts and sample with
the same seeds; the learning rate is ~0 so the policy, and with it the completions (their lengths
decide most of the cost), stay identical between the two. Repetitions alternate which trainer goes
first, the first pair is warm-up, and the ratio of median step times is printed against the target
(issue 6: <= 1.25). `test` uses the random tiny models (seconds); `tiny` the packaged tiny base as
policy and, unless --reward names a trained reward model, as an untrained reward model.
The load average is printed: on a shared machine wall-clock numbers are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emotionthinker.config import PROJECT_ROOT, load_config

TARGET_RATIO = 1.25
RAVDESS = PROJECT_ROOT / ".." / "shared" / "data" / "ravdess"
LABELS = ("neutral", "happy", "sad", "angry", "fear", "contempt or disgust", "surprise", "neutral")  # RAVDESS codes 01-08


def prompt_clips(folder: Path, n: int):
    """n RAVDESS clips when the shared data is there, else n synthetic voiced tones (labels cycle)."""
    from models.grpo_data import GrpoPrompt

    files = sorted(RAVDESS.resolve().glob("Actor_*/*.wav"))[:: 7][:n] if RAVDESS.is_dir() else []
    if len(files) == n:
        return [GrpoPrompt(f.stem, str(f), LABELS[int(f.stem.split("-")[2]) - 1]) for f in files]
    import soundfile as sf

    out = []
    for i in range(n):
        t = np.arange(int(16000 * 2.5)) / 16000
        y = 0.3 * np.sin(2 * np.pi * (120 + 25 * i) * t * (1 + 0.1 * np.sin(3 * t)))
        path = folder / f"tone{i}.wav"
        sf.write(path, y.astype(np.float32), 16000)
        out.append(GrpoPrompt(f"tone{i}", str(path), LABELS[i % len(LABELS)]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="test", choices=("test", "tiny"))
    p.add_argument("--reps", type=int, default=6, help="measured steps per trainer (after one warm-up step each)")
    p.add_argument("--batch", type=int, default=8, help="completions per step (per_device_train_batch_size)")
    p.add_argument("--k", type=int, default=4, help="num_generations")
    p.add_argument("--max-completion-length", type=int, default=32)
    p.add_argument("--policy", default=None, help="policy source (default: the profile's models.policy_source)")
    p.add_argument("--reward", default=None, help="reward model source (default: the profile's untrained base)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--free-rm-decoding", action="store_true",
                   help="R_t answers by free greedy decoding instead of the constrained JSON skeleton")
    p.add_argument("--strict", action="store_true", help="exit 1 when the ratio misses the target")
    a = p.parse_args(argv)

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from models.backbone import AudioLM
    from models.grpo_data import GrpoDataset
    from models.grpo_trainer import GrpoPtrTrainer, load_scorer, make_accelerator

    tmp = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    base = load_config(a.profile, overrides={"paths": {"workspace": str(tmp / "ws")}})
    common = {"per_device_train_batch_size": a.batch, "num_generations": a.k, "max_completion_length": a.max_completion_length,
              "learning_rate": 1e-12, "max_steps": a.reps + 1, "output_dir": str(tmp / "out")}  # fmt: skip
    ptr_only = {"no_progressive": True, "constrained_reward_answers": not a.free_rm_decoding}
    cfg_ptr = base.model_copy(update={"grpo": base.grpo.model_copy(update={**common, **ptr_only})})
    cfg_plain = base.model_copy(update={"grpo": base.grpo.model_copy(update={**common, "plain_grpo": True})})

    t0 = time.perf_counter()
    policy_source = a.policy or base.models.policy_source
    policy = AudioLM.from_source(policy_source, base)
    reward_source = a.reward or base.models.reward_source
    scorer = load_scorer(cfg_ptr, reward_source)
    prompts = prompt_clips(tmp, max(2, a.batch // a.k * (a.reps + 1)))
    dataset = GrpoDataset(prompts, base)
    accelerator = make_accelerator(base, policy)
    ptr = GrpoPtrTrainer(cfg_ptr, policy, dataset, tmp / "ptr", scorer=scorer, accelerator=accelerator)
    plain = GrpoPtrTrainer(cfg_plain, policy, dataset, tmp / "plain", reference=ptr.reference, accelerator=accelerator)
    print(f"profile {a.profile}: policy {policy_source}, reward model {reward_source}; batch {a.batch} "
          f"completions (K={a.k}), max {a.max_completion_length} tokens; R_t answers "
          f"{'free greedy' if a.free_rm_decoding else 'constrained'}; {len(prompts)} prompts; torch threads "
          f"{torch.get_num_threads()}; set-up {time.perf_counter() - t0:.1f} s")  # fmt: skip

    times: dict[str, list[dict[str, float]]] = {"plain": [], "ptr": []}
    for step in range(1, a.reps + 2):
        order = [("plain", plain), ("ptr", ptr)] if step % 2 else [("ptr", ptr), ("plain", plain)]
        wall: dict[str, float] = {}
        for name, trainer in order:
            started = time.perf_counter()
            metrics, _ = trainer.step(step)
            wall[name] = metrics["wall_s"] = time.perf_counter() - started
            if step > 1:  # step 1 of each: warm-up
                times[name].append(metrics)
        print(f"  step {step}{' (warm-up)' if step == 1 else ''}: plain {wall['plain']:.2f} s, GRPO-PTR {wall['ptr']:.2f} s",
              flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(m[key] for m in times[name])

    print(f"\n{'':<10}{'step (s)':>10}{'generate':>10}{'R_t':>10}{'reference':>10}{'update':>10}{'length':>9}")
    for name in ("plain", "ptr"):
        print(f"{name:<10}{med(name, 'wall_s'):>10.3f}{med(name, 'time/generate_s'):>10.3f}"
              f"{med(name, 'time/reasoning_s'):>10.3f}{med(name, 'time/reference_s'):>10.3f}"
              f"{med(name, 'time/update_s'):>10.3f}{med(name, 'completions/mean_length'):>9.1f}")  # fmt: skip
    same = all(x["completions/mean_length"] == y["completions/mean_length"] for x, y in zip(times["plain"], times["ptr"]))
    ratio = med("ptr", "wall_s") / med("plain", "wall_s")
    ok = ratio <= TARGET_RATIO
    print(f"\nstep-time ratio GRPO-PTR / plain GRPO (median of {a.reps}): {ratio:.3f}  target <= {TARGET_RATIO}: "
          f"{'met' if ok else 'MISSED'}; identical completion lengths in both: {same}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    return 1 if a.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
