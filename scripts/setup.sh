#!/usr/bin/env bash
# Set up everything a fresh machine needs: Debian packages (espeak-ng, sox),
# a project-local virtual environment with the committed lock, the project itself.
# Idempotent: a stamp keyed on the lock and pyproject skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
# Headless Chromium drives the MLflow UI browser test (Playwright uses it; no browser download).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] please install: sudo apt-get install -y ${need_apt[*]}" >&2; exit 1
  fi
fi

stamp=.venv/.installed
want=$(cat requirements.lock pyproject.toml constraints.txt scripts/setup.sh | sha1sum | cut -c1-40)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating .venv and installing the locked stack (a few minutes on a cold machine)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# setuptools pinned: torch pulls whatever is newest, and the editable install below builds with it
# (no build isolation), so an unpinned one would change the build under a finished lock.
.venv/bin/python -m pip install -q --upgrade pip setuptools==84.2.1
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
# The lock is complete (pip freeze), so no resolver run and no surprises.
DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-deps -r requirements.lock
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat  # a .pth to the root: new modules import without reinstalling
echo "$want" > "$stamp"
echo "[setup] done"
