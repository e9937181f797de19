#!/usr/bin/env bash
# Set up (idempotent) and run every check CI runs: ruff, mypy on safebot/, pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k shield -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}

echo "[test] ruff"
.venv/bin/ruff check safebot tests scripts
.venv/bin/ruff format --check safebot tests scripts
echo "[test] mypy safebot/"
.venv/bin/mypy safebot
echo "[test] pytest"
set +e
.venv/bin/pytest -p no:cacheprovider --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$rc"
