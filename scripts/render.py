"""Render a trained run with the envelope overlay, and plot its curves.

.venv/bin/python scripts/render.py runs/reach --episodes 2
"""

from __future__ import annotations

import argparse

from safebot.render import plot_run, render_run
from safebot.runtime import configure_process


def main() -> None:
    # safebot's process defaults, as `safebot` applies them; numba reads OMP_WAIT_POLICY
    # when it starts its OpenMP threads (the shield's kernel warm-up), after these imports
    configure_process()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--out")
    parser.add_argument("--gif", action="store_true")
    args = parser.parse_args()

    video = render_run(args.run_dir, episodes=args.episodes, out=args.out, gif=args.gif)
    curves = plot_run(args.run_dir)
    print(f"video {video}\ncurves {curves}")


if __name__ == "__main__":
    main()
