"""Train a shielded policy: the same code path as `safebot train`, readable top to bottom.

.venv/bin/python scripts/train.py reach --steps 5000 --scheduler competence --out runs/reach
.venv/bin/python scripts/train.py reach --shield off --constraint penalty   # a baseline

The legacy `--scheduler none` (= `--shield off`) and `--scheduler penalty`
(= `--shield off --constraint penalty`) still work; safebot.modes decodes them.
"""

from __future__ import annotations

import argparse

from safebot.modes import Algo, RewardConstraint, SchedulerChoice, ShieldMode
from safebot.runtime import configure_process
from safebot.train import RunOptions, train


def main() -> None:
    # safebot's process defaults, as `safebot` applies them; numba reads OMP_WAIT_POLICY
    # when it starts its OpenMP threads (the shield's kernel warm-up), after these imports
    configure_process()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", help="task TOML path or shipped name")
    parser.add_argument("--algo", type=Algo, choices=list(Algo))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--scheduler", type=SchedulerChoice, choices=list(SchedulerChoice))
    parser.add_argument("--shield", type=ShieldMode, choices=list(ShieldMode))
    parser.add_argument("--constraint", type=RewardConstraint, choices=list(RewardConstraint))
    parser.add_argument("--width", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out")
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--eval-episodes", type=int)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()

    options = RunOptions(
        algo=args.algo,
        steps=args.steps,
        scheduler=args.scheduler,
        shield=args.shield,
        constraint=args.constraint,
        width=args.width,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
    )
    result = train(args.task, options, out=args.out, force=args.force)
    print(f"run {result.run_dir}: {result.final}")


if __name__ == "__main__":
    main()
