#!/usr/bin/env bash
# The main job on the embedded default: set up, train shielded SAC+HER on Reach with
# the competence scheduler (about 5-10 minutes on 2 cores), render a video with the
# envelope drawn in, and plot width, success and cost.
#   scripts/demo.sh [RUN_DIR]     (default runs/demo; an existing demo run is replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}
RUN=${1:-runs/demo}

.venv/bin/safebot train reach --scheduler competence --out "$RUN" --force
.venv/bin/safebot eval "$RUN" --episodes 20 --json "$RUN/eval.json"
.venv/bin/safebot render "$RUN" --episodes 3
.venv/bin/safebot plot "$RUN"
echo
echo "demo done:"
echo "  policy   $RUN/final_model.zip"
echo "  video    $RUN/rollout.mp4"
echo "  curves   $RUN/curves.png"
echo "  metrics  $RUN/metrics.csv   (TensorBoard: .venv/bin/tensorboard --logdir $RUN/tb)"
