#!/usr/bin/env bash
# A standing MLflow tracking + registry server, for a team or the docker image
# (for a personal UI over the embedded store, `emotionthinker ui` is enough).
# Clients then set services.mlflow_tracking_uri: http://<host>:<port> and leave
# services.mlflow_artifact_root empty: artifacts go through this server's proxy.
#
#   MLFLOW_BACKEND_STORE_URI   runs, metrics, registry  (default: the project's SQLite file)
#   MLFLOW_ARTIFACTS_DESTINATION  where proxied artifacts land (default: var/mlflow/artifacts; s3://... works)
#   MLFLOW_HOST / MLFLOW_PORT  bind address (default 127.0.0.1:5000; set 0.0.0.0 only behind a proxy)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
BACKEND=${MLFLOW_BACKEND_STORE_URI:-sqlite:///$ROOT/var/mlflow/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS_DESTINATION:-$ROOT/var/mlflow/artifacts}
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
case "$BACKEND" in sqlite:///*) mkdir -p "$(dirname "${BACKEND#sqlite:///}")" ;; esac
case "$ARTIFACTS" in *://*) ;; *) mkdir -p "$ARTIFACTS" ;; esac
echo "MLflow server: http://$HOST:$PORT  (store $BACKEND, artifacts $ARTIFACTS)"
exec "$PY" -m mlflow server \
  --backend-store-uri "$BACKEND" \
  --serve-artifacts --artifacts-destination "$ARTIFACTS" \
  --host "$HOST" --port "$PORT" --workers "${MLFLOW_WORKERS:-2}"
