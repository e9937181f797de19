#!/usr/bin/env bash
# Idempotent set-up: .venv, the CPU torch wheel first, then safebot in editable
# mode with its dev extras. Safe to run again; it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python

# An unpinned torch pulls a multi-GB CUDA build; 2.13.0 is a CPU wheel.
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
    echo "[setup] installing torch==2.13.0 (CPU)"
    "$VPY" -m pip install -q "torch==2.13.0"
fi

stamp=.venv/.safebot-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing safebot[dev] (editable)"
    "$VPY" -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
echo "[setup] ready: $("$VPY" -c 'import safebot, mujoco, torch; print(f"safebot {safebot.__version__}, mujoco {mujoco.__version__}, torch {torch.__version__}")')"
