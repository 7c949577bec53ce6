#!/usr/bin/env bash
# Tiny GRPO-PTR acceptance (issue 6): GRPO-PTR from the SFT model of benchmarks/sft_acceptance.sh
# (emotionthinker-base@challenger) scored by the reward model of `make demo`
# (emotionthinker-reward@challenger) on the RAVDESS 01-02 + demo CoT prompts; prints the per-step
# training reward, accuracy and R_t state from the run's MLflow metrics, first-5 vs last-5 means,
# the switch step and the wall time. The curves are also the run's `reward_accuracy.png` in MLflow.
#
#   make demo && bash benchmarks/sft_acceptance.sh && bash benchmarks/grpo_acceptance.sh   (~20 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
ET=.venv/bin/emotionthinker
PROMPTS=${1:-data/cot/ravdess+demo/emotion_cot.jsonl}
RESULT=var/benchmarks/grpo_acceptance.json
[ -x "$ET" ] || { echo "run 'make setup' first" >&2; exit 2; }
[ -f "$PROMPTS" ] || { echo "$PROMPTS not found: run benchmarks/sft_acceptance.sh first" >&2; exit 2; }
mkdir -p "$(dirname "$RESULT")"

t0=$SECONDS
"$ET" train grpo --data "$PROMPTS" --policy registry:emotionthinker-base@challenger \
  --reward registry:emotionthinker-reward@challenger -c benchmarks/grpo_acceptance.yaml --result-out "$RESULT"
wall=$((SECONDS - t0))

.venv/bin/python - "$RESULT" "$wall" <<'PY'
import json, sys
import mlflow
from emotionthinker.config import load_config

res, wall = json.load(open(sys.argv[1])), int(sys.argv[2])
cfg = load_config(None, "benchmarks/grpo_acceptance.yaml")
client = mlflow.tracking.MlflowClient(cfg.tracking_uri)
def series(key):
    return {m.step: m.value for m in client.get_metric_history(res["run_id"], key)}
reward, acc, on = series("reward"), series("accuracy"), series("reasoning/on")
print(f"\nGRPO-PTR from {res['policy_source']}: {res['global_step']} steps, {wall} s wall; MLflow run {res['run_id']}")
print(f"{'step':>4} {'reward':>7} {'accuracy':>9} {'R_t on':>7}")
for step in sorted(reward):
    print(f"{step:>4} {reward[step]:>7.3f} {acc.get(step, float('nan')):>9.3f} {int(on.get(step, 0)):>7}")
s = res["summary"]
print(f"mean reward first 5 / last 5: {s['reward_first5']:.3f} -> {s['reward_last5']:.3f}; "
      f"accuracy: {s['accuracy_first5']:.3f} -> {s['accuracy_last5']:.3f}")
print(f"R_t switch step: {res['switch_step']} (schedule: on once the mean accuracy of the last "
      f"{cfg.grpo.progressive_window} steps >= {cfg.grpo.progressive_threshold})")
PY
