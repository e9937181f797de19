"""safebot: reinforcement learning for robot arms under adaptive safety envelopes."""

import os

# numba's OpenMP layer spin-waits between parallel regions by default; on a shared
# 2-core machine that starves the other process and made project_batch ~100x slower
# (250 µs vs 2 µs per problem, measured with `safebot bench kernels`). Users can
# still override it in their environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
