#!/usr/bin/env bash
# Tiny GRPO-PTR acceptance (issue 6). Trains the reasoning reward model on the RAVDESS 01-02 + demo
# RM tuples of benchmarks/sft_acceptance.sh (64 LoRA steps; prints the held-out Spearman per
# criterion), then runs GRPO-PTR from the SFT acceptance model (emotionthinker-base@challenger)
# scored by that reward model, with benchmarks/grpo_acceptance.yaml. Prints the per-step training
# reward, accuracy and R_t state read back from the run's MLflow metrics (the run also holds the
# curves as `reward_accuracy.png`), first vs last means, and checks that R_t switched on at the step
# the progressive schedule gives for the logged accuracies.
#
#   bash benchmarks/sft_acceptance.sh && bash benchmarks/grpo_acceptance.sh   (~40 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
ET=.venv/bin/emotionthinker
PY=.venv/bin/python
CONFIG=benchmarks/grpo_acceptance.yaml
PROMPTS=${1:-data/cot/ravdess+demo/emotion_cot.jsonl}
TUPLES=$(dirname "$PROMPTS")/rm_tuples.jsonl
OUT=var/benchmarks
RM_RESULT=$OUT/rm_acceptance.json
RESULT=$OUT/grpo_acceptance.json
[ -x "$ET" ] || { echo "run 'make setup' first" >&2; exit 2; }
for f in "$PROMPTS" "$TUPLES"; do
  [ -f "$f" ] || { echo "$f not found: run benchmarks/sft_acceptance.sh first" >&2; exit 2; }
done
mkdir -p "$OUT"

t0=$SECONDS
[ -f "$RM_RESULT" ] || "$ET" train rm --tuples "$TUPLES" -c "$CONFIG" --result-out "$RM_RESULT"
rm_wall=$((SECONDS - t0))
REWARD=$("$PY" - "$RM_RESULT" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
t, ev = res["training"], res["eval"]
print(f"reward model {res['registered']['name']} v{res['registered']['version']}: {t['global_step']} steps, loss {t['first_loss']} -> {t['last_loss']}; held-out Spearman "
      f"(greedy / expected scores), parse rate {ev.get('parse_rate', float('nan')):.3f}:", file=sys.stderr)
# Greedy (argmax) Spearman is missing where the argmax answers are constant (undefined correlation).
for key in sorted({k.removeprefix("expected/") for k in ev if k.removeprefix("expected/").startswith("spearman/")}):
    print(f"  {key[9:]:<34}{ev.get(key, float('nan')):>7.3f}{ev.get('expected/' + key, float('nan')):>9.3f}", file=sys.stderr)
r = res["registered"]
print(f"registry:{r['name']}@{r['version']}")
PY
)
echo "=== reward model: $REWARD (${rm_wall} s)"

t0=$SECONDS
"$ET" train grpo --data "$PROMPTS" --policy registry:emotionthinker-base@challenger --reward "$REWARD" \
  -c "$CONFIG" --result-out "$RESULT"
wall=$((SECONDS - t0))

"$PY" - "$RESULT" "$wall" "$CONFIG" <<'PY'
import json, sys
from statistics import fmean
import mlflow
from emotionthinker.config import load_config
from models.grpo_math import ProgressiveSchedule

res, wall, config = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
cfg = load_config(None, config)
g = cfg.grpo
client = mlflow.tracking.MlflowClient(cfg.tracking_uri)
def series(key):
    return {m.step: m.value for m in client.get_metric_history(res["run_id"], key)}
reward, acc, on, rt = series("reward"), series("accuracy"), series("reasoning/on"), series("rewards/reasoning/mean")
steps = sorted(acc)
print(f"\nGRPO-PTR from {res['policy_source']}: {res['global_step']} steps, {wall} s wall; MLflow run {res['run_id']}")
print(f"{'step':>4} {'reward':>7} {'accuracy':>9} {'R_t on':>7} {'R_t':>6}")
for s in steps:
    print(f"{s:>4} {reward[s]:>7.3f} {acc[s]:>9.3f} {int(on.get(s, 0)):>7} " + (f"{rt[s]:>6.3f}" if s in rt else f"{'-':>6}"))
half = len(steps) // 2
for name, d in (("reward", reward), ("accuracy", acc)):
    v = [d[s] for s in steps]
    print(f"mean {name}: first 5 {fmean(v[:5]):.3f} -> last 5 {fmean(v[-5:]):.3f}; "
          f"first half {fmean(v[:half]):.3f} -> second half {fmean(v[half:]):.3f}")
# The trainer's schedule class, replayed on the logged accuracies, against the switch the run logged.
schedule = ProgressiveSchedule.from_config(g)
for s in steps:
    schedule.update(s, acc[s])
expected = schedule.switch_step
print(f"R_t switch step: {res['switch_step']}; the schedule (mean accuracy of the last {g.progressive_window} steps >= "
      f"{g.progressive_threshold}) gives {expected}: {'agree' if expected == res['switch_step'] else 'DISAGREE'}")
PY
