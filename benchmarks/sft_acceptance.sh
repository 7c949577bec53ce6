#!/usr/bin/env bash
# Tiny SFT acceptance (issue 5): SFT on RAVDESS actors 01-02 plus the demo corpus, then the held-out
# evaluation of the trained model beside the untrained base (format rate, emotion, attribute and
# comparative accuracy), with the wall time of every step. Everything goes through the platform's
# own commands, so the runs land in MLflow (experiment `emotionthinker`) like any other.
#
#   bash benchmarks/sft_acceptance.sh [RAVDESS_ROOT]     (default ../shared/data/ravdess; ~45 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
ET=.venv/bin/emotionthinker
RAVDESS=${1:-../shared/data/ravdess}
CONFIG=benchmarks/sft_acceptance.yaml
DATA=data
COMBINED=$DATA/annotated/ravdess+demo
SFT_DIR=$DATA/sft-ravdess+demo
RESULT=var/benchmarks/sft_acceptance.json

[ -x "$ET" ] || { echo "run 'make setup' first" >&2; exit 2; }
[ -d "$RAVDESS" ] || { echo "RAVDESS not found at $RAVDESS (see ../shared/data/README.md)" >&2; exit 2; }
mkdir -p "$COMBINED" "$(dirname "$RESULT")"

step() {  # step NAME CMD...: run, print its wall time
  local name=$1 t0=$SECONDS; shift
  echo "=== $name: $*"
  "$@"
  echo "=== $name: $((SECONDS - t0)) s"
}

t_start=$SECONDS
[ -f "$DATA/demo/metadata.jsonl" ] || step demo-corpus "$ET" demo-corpus --out "$DATA/demo"
step ingest-demo "$ET" ingest --corpus demo --root "$DATA/demo"
step ingest-ravdess "$ET" ingest --corpus ravdess --root "$RAVDESS"
step annotate-demo "$ET" annotate --manifest "$DATA/manifests/demo/manifest.jsonl"
step annotate-ravdess "$ET" annotate --manifest "$DATA/manifests/ravdess/manifest.jsonl"
# Levels are calibrated per corpus inside each annotate run, so the two sets simply concatenate.
cat "$DATA/annotated/demo/annotated.jsonl" "$DATA/annotated/ravdess/annotated.jsonl" > "$COMBINED/annotated.jsonl"
step cot "$ET" cot-data --annotated "$COMBINED/annotated.jsonl"
step sft-data "$ET" sft-data --annotated "$COMBINED/annotated.jsonl" --cot "$DATA/cot/ravdess+demo/emotion_cot.jsonl" --out "$SFT_DIR"
step sft "$ET" train sft --data "$SFT_DIR" --config "$CONFIG" --result-out "$RESULT"
echo "=== total: $((SECONDS - t_start)) s; result: $RESULT"

.venv/bin/python - "$RESULT" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
trained, base = res["eval"], res.get("base_eval") or {}
print(f"{'held-out metric':<34}{'trained':>10}{'base':>10}")
for key in sorted(k for k in trained if not k.endswith("/n")):
    b = base.get(key)
    print(f"{key:<34}{trained[key]:>10.3f}" + ("" if b is None else f"{b:>10.3f}"))
print("samples:", {k: v for k, v in trained.items() if k.endswith("/n")})
for stage, r in res["stages"].items():
    print(f"{stage}: {r['global_step']} steps, loss {r['first_loss']} -> {r['last_loss']}, {r['runtime_s']:.0f} s")
print(f"sft flow wall: {res['wall_s']:.0f} s; MLflow run {res['run_id']}")
EOF
