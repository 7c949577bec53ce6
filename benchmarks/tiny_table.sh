#!/usr/bin/env bash
# Tiny Table-2 rows (issue 7): the untrained base, the SFT model of benchmarks/sft_acceptance.sh, plain
# GRPO and GRPO-PTR (benchmarks/grpo_acceptance.sh; the plain-GRPO run is made here with the same config
# from the same SFT model) evaluated on RAVDESS 01-02 (every clip: the paper's zero-shot protocol; note
# that the SFT data of sft_acceptance.sh contains these actors) and the EmoDB test speakers of
# ../shared/data. Then `emotionthinker tables`, and a check that every run's metrics equal those
# recomputed from its saved per-clip outputs. Confusion matrices: each run's confusion_matrix.png.
#
#   bash benchmarks/tiny_table.sh            (after sft_acceptance.sh and grpo_acceptance.sh; ~30 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
ET=.venv/bin/emotionthinker
PY=.venv/bin/python
OUT=var/benchmarks
PROMPTS=data/cot/ravdess+demo/emotion_cot.jsonl
for f in "$OUT/sft_acceptance.json" "$OUT/grpo_acceptance.json"; do
  [ -f "$f" ] || { echo "$f not found: run benchmarks/sft_acceptance.sh and benchmarks/grpo_acceptance.sh first" >&2; exit 2; }
done
registered() {  # registered() RESULT.json -> registry:<name>@<version> of the model that run registered
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))["registered"]; print("registry:%s@%s" % (r["name"], r["version"]))' "$1"
}
SFT=$(registered "$OUT/sft_acceptance.json")
[ -f "$OUT/grpo_plain.json" ] || "$ET" train grpo --data "$PROMPTS" --policy "$SFT" --plain-grpo \
  -c benchmarks/grpo_acceptance.yaml --result-out "$OUT/grpo_plain.json"
MODELS=(packaged:tiny-base "$SFT" "$(registered "$OUT/grpo_plain.json")" "$(registered "$OUT/grpo_acceptance.json")")

results=()
for model in "${MODELS[@]}"; do
  for bench in ravdess emodb; do
    res="$OUT/eval-${bench}-$(echo "$model" | tr ':@/' '___').json"
    t0=$SECONDS
    "$ET" evaluate --model "$model" --benchmark "$bench" -c benchmarks/grpo_acceptance.yaml --result-out "$res"
    echo "=== evaluate $model on $bench: $((SECONDS - t0)) s"
    results+=("$res")
  done
done
"$ET" tables -c benchmarks/grpo_acceptance.yaml --out "$OUT/tables"

"$PY" - "${results[@]}" <<'PY'
import json, sys
from emotionthinker.evaluation.metrics import metrics_from_rows
from emotionthinker.evaluation.predict import read_outputs_table

print(f"\n{'model [variant]':<36}{'benchmark':<10}{'n':>5}{'UAR':>8}{'WA':>8}{'F1':>8}{'format':>8}  recomputed equal")
for path in sys.argv[1:]:
    r = json.load(open(path))
    m, again = r["metrics"], metrics_from_rows(read_outputs_table(r["outputs"]["jsonl"]))
    same = all(abs(a - b) < 1e-9 for a, b in ((again.uar, m["uar"]), (again.weighted_accuracy, m["weighted_accuracy"]),
                                              (again.macro_f1, m["macro_f1"]), (again.extra["format_rate"], m["format_rate"])))
    label = f"{r['model']['label']} [{r['model']['variant']}]"
    print(f"{label:<36}{r['benchmark']:<10}{r['n']:>5}{m['uar']:>8.3f}{m['weighted_accuracy']:>8.3f}{m['macro_f1']:>8.3f}"
          f"{m['format_rate']:>8.3f}  {same}")
PY
echo "tables: $OUT/tables/table2.md (Table-2 layout), $OUT/tables/table4.md (ablations)"
