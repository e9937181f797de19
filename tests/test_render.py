"""Rendering: the video decodes, frames are not blank, and the overlay is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safebot.envs import make
from safebot.render import plot_run, render_frames, render_run, write_video
from safebot.shield import Shield
from safebot.train import RunOptions, train


def _frames(width: float) -> list[np.ndarray]:
    shield = Shield(make("reach"))
    shield.set_width(width)
    return render_frames(shield, lambda obs: np.ones(3), episodes=1, seed=0)


def test_frames_carry_the_envelope_overlay() -> None:
    frames = _frames(0.0)
    assert len(frames) == 50 and frames[0].shape == (480, 640, 3)
    f = frames[10].astype(int)
    assert f.std() > 10, "blank frame"
    panel = f[10:115, 10:175]
    assert (panel.mean(axis=2) < 80).mean() > 0.3, "gauge panel background missing"
    # the raw action (red arrow) and the projected one (green) are drawn: both colours present
    red = (f[..., 0] > 180) & (f[..., 1] < 80) & (f[..., 2] < 80)
    green = (f[..., 1] > 150) & (f[..., 0] < 100) & (f[..., 2] < 120)
    assert red.sum() > 20 and green.sum() > 20


def test_video_file_decodes(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    frames = _frames(1.0)[:20]
    path = write_video(frames, tmp_path / "v.mp4", fps=25)
    # iterate: list(reader) asks len(), which ffmpeg readers report as inf (MemoryError)
    decoded = list(imageio.get_reader(path).iter_data())
    assert len(decoded) == 20 and decoded[5].std() > 10
    gif = write_video(frames, tmp_path / "v.gif", fps=25, gif=True)
    assert gif.stat().st_size > 1000


@pytest.mark.slow
def test_render_and_plot_a_trained_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(
        "reach",
        RunOptions(steps=128, eval_every=64, eval_episodes=1, checkpoint_every=64),
        out=out,
        progress=False,
    )
    video = render_run(out, episodes=1)
    assert video.exists() and video.stat().st_size > 10_000
    png = plot_run(out)
    assert png.exists() and png.stat().st_size > 10_000
