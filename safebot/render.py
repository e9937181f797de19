"""Rollout videos with the envelope drawn into the scene, and run curves.

Each frame shows the workspace box and the keep-out boxes (inflated by the
current margin) as translucent geoms, the raw action (red) and the projected
action (green) as arrows at the end effector, and a small gauge panel: width,
end-effector speed against its bound, contact force against its bound.
Headless machines render through EGL (``MUJOCO_GL=egl``, set before mujoco is
imported; the CLI does it).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

if not os.environ.get("DISPLAY") and "MUJOCO_GL" not in os.environ:
    os.environ["MUJOCO_GL"] = "egl"

import mujoco
import numpy as np
from PIL import Image, ImageDraw

from safebot.envs.base import ArmTaskEnv
from safebot.modes import PolicyChoice
from safebot.shield import Shield
from safebot.train import RunDir, RunError, load_policy, make_env

WIDTH, HEIGHT = 640, 480
_ARROW_SCALE = 1.0  # metres of arrow per m/s of end-effector velocity


def _add_geom(
    scene: mujoco.MjvScene, kind: int, size: Any, pos: Any, rgba: Any, mat: Any = None
) -> None:
    if scene.ngeom >= scene.maxgeom:
        return
    g = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(
        g,
        kind,
        np.asarray(size, dtype=np.float64),
        np.asarray(pos, dtype=np.float64),
        (np.eye(3) if mat is None else mat).reshape(-1).astype(np.float64),
        np.asarray(rgba, dtype=np.float32),
    )
    scene.ngeom += 1


def _add_arrow(
    scene: mujoco.MjvScene, start: Any, end: Any, rgba: Any, width: float = 0.008
) -> None:
    if scene.ngeom >= scene.maxgeom or np.linalg.norm(np.asarray(end) - np.asarray(start)) < 1e-4:
        return
    g = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(
        g,
        mujoco.mjtGeom.mjGEOM_ARROW,
        np.zeros(3),
        np.zeros(3),
        np.eye(3).reshape(-1),
        np.asarray(rgba, dtype=np.float32),
    )
    mujoco.mjv_connector(
        g,
        mujoco.mjtGeom.mjGEOM_ARROW,
        width,
        np.asarray(start, dtype=np.float64),
        np.asarray(end, dtype=np.float64),
    )
    scene.ngeom += 1


def draw_envelope(scene: mujoco.MjvScene, shield: Shield) -> None:
    """Add the envelope's boxes and the raw/projected action arrows to a scene."""
    inner = shield.env.unwrapped
    bounds = shield.envelope.bounds()
    if bounds.workspace_low is not None and bounds.workspace_high is not None:
        centre = 0.5 * (bounds.workspace_low + bounds.workspace_high)
        half = 0.5 * (bounds.workspace_high - bounds.workspace_low)
        _add_geom(scene, mujoco.mjtGeom.mjGEOM_BOX, half, centre, (0.2, 0.5, 1.0, 0.07))
    if isinstance(inner, ArmTaskEnv):
        margin = bounds.keepout_margin or 0.0
        for c, h in inner.keepout_boxes():
            _add_geom(scene, mujoco.mjtGeom.mjGEOM_BOX, h + margin, c, (1.0, 0.2, 0.2, 0.18))
        ee = inner.physics.ee_pos()
        if inner.action_mode == "ee_velocity":
            raw, proj = shield.last_action[:3], shield.last_projected[:3]
        else:
            J = inner.physics.ee_jacobian()
            raw, proj = J @ shield.last_action, J @ shield.last_projected
        _add_arrow(scene, ee, ee + _ARROW_SCALE * raw, (0.9, 0.1, 0.1, 0.9))
        _add_arrow(scene, ee, ee + _ARROW_SCALE * proj, (0.1, 0.85, 0.2, 0.95), width=0.011)


def _bar(
    draw: ImageDraw.ImageDraw, x: int, y: int, label: str, value: float, bound: float, cap: float
) -> None:
    w = 150
    draw.text((x, y), label, fill=(255, 255, 255))
    y += 14
    draw.rectangle((x, y, x + w, y + 10), outline=(200, 200, 200))
    frac = 0.0 if cap <= 0 else min(max(value / cap, 0.0), 1.0)
    bfrac = 0.0 if cap <= 0 else min(max(bound / cap, 0.0), 1.0)
    over = value > bound + 1e-9
    draw.rectangle(
        (x, y, x + int(w * frac), y + 10), fill=(230, 60, 60) if over else (80, 200, 120)
    )
    bx = x + int(w * bfrac)
    draw.line((bx, y - 2, bx, y + 12), fill=(255, 220, 0), width=2)


def gauge_panel(frame: np.ndarray, shield: Shield, info: dict[str, Any]) -> np.ndarray:
    """Composite a small panel (width, speed vs bound, force vs bound) into the frame's corner."""
    img = Image.fromarray(frame)
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((8, 8, 178, 118), fill=(0, 0, 0, 150))
    d = ImageDraw.Draw(overlay)
    inner = shield.env.unwrapped
    bounds = shield.envelope.bounds()
    width = shield.envelope.mean_width()
    _bar(d, 16, 12, f"width {width:.2f}", width, width, 1.0)
    if isinstance(inner, ArmTaskEnv) and bounds.ee_speed is not None:
        # the measured speed (info["speed/ee"]): shown against its bound, never a cost
        speed = float(info.get("speed/ee", np.linalg.norm(inner.physics.ee_vel())))
        cap = float(np.max(shield.envelope.limits["ee_speed"].cap)) * 1.24
        _bar(
            d,
            16,
            44,
            f"ee speed {speed:.2f} / {bounds.ee_speed.min() * 1.24:.2f} m/s",
            speed,
            float(bounds.ee_speed.min() * 1.24),
            cap,
        )
    force = 0.0
    if isinstance(inner, ArmTaskEnv):
        force, _ = inner.physics.max_contact_force()
    fb = (
        bounds.contact_force
        if bounds.contact_force is not None
        else inner.task.cost.arm_table_force
        if isinstance(inner, ArmTaskEnv)
        else 1.0
    )
    _bar(d, 16, 76, f"force {force:.1f} / {fb:.0f} N", force, fb, max(fb * 2, 1.0))
    status = "shield: " + ("intervened" if info.get("shield/intervened") else "pass")
    d.text((16, 104), status, fill=(255, 255, 255))
    return np.asarray(Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB"))


def render_frames(shield: Shield, predict: Any, *, episodes: int, seed: int) -> list[np.ndarray]:
    """Roll out ``predict`` in ``shield`` and return the annotated frames."""
    inner = shield.env.unwrapped
    if not isinstance(inner, ArmTaskEnv):
        raise TypeError("render_frames draws safebot tasks; wrap Fetch renders yourself")
    renderer = mujoco.Renderer(inner.model, HEIGHT, WIDTH)
    cam = (
        "front" if mujoco.mj_name2id(inner.model, mujoco.mjtObj.mjOBJ_CAMERA, "front") >= 0 else -1
    )
    frames = []
    try:
        for ep in range(episodes):
            obs, info = shield.reset(seed=seed + ep)
            done = False
            while not done:
                obs, _, term, trunc, info = shield.step(predict(obs))
                done = term or trunc
                renderer.update_scene(inner.data, camera=cam)
                draw_envelope(renderer.scene, shield)
                frames.append(gauge_panel(renderer.render(), shield, info))
    finally:
        renderer.close()
    return frames


def write_video(frames: list[np.ndarray], path: Path, fps: int, gif: bool = False) -> Path:
    """Write frames as MP4 (H.264) or, with ``gif``, as a half-rate GIF."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    if gif:
        imageio.mimsave(path, frames[::2], duration=2.0 / fps, loop=0)  # type: ignore[arg-type]
    else:
        imageio.mimsave(path, frames, fps=fps, codec="libx264", quality=7, macro_block_size=16)  # type: ignore[arg-type]
    return path


def render_run(
    run_dir: str | Path,
    *,
    episodes: int = 2,
    out: str | Path | None = None,
    gif: bool = False,
    seed: int = 0,
    which: PolicyChoice | str = PolicyChoice.LAST,
) -> Path:
    """Render a trained run's last (or best) model to MP4 (or GIF).

    The last model runs at the run's final width, the best at the width of its
    evaluation (``safebot render`` defaults to ``best``).
    """
    run_dir = Path(run_dir)
    selected = RunDir(run_dir).select(which)
    spec, model = load_policy(run_dir, selected.which)
    shield = make_env(spec, width=selected.width)
    frames = render_frames(
        shield, lambda o: model.predict(o, deterministic=True)[0], episodes=episodes, seed=seed
    )
    default = run_dir / ("rollout.gif" if gif else "rollout.mp4")
    return write_video(
        frames, Path(out) if out is not None else default, round(spec.robot.control_hz), gif
    )


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Width, evaluation success and cost rate, and cumulative training cost against steps (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    path = run_dir / "metrics.csv"
    if not path.exists():
        raise RunError(f"{run_dir} has no metrics.csv (has it trained yet?)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RunError(f"{path} is empty")
    step = np.array([float(r["step"]) for r in rows])

    def col(k: str) -> np.ndarray:
        return np.array([float(r[k]) for r in rows])

    fig, axes = plt.subplots(4, 1, figsize=(7, 8.5), sharex=True)
    axes[0].step(step, col("width"), where="post", color="tab:blue")
    axes[0].set_ylabel("envelope width")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].plot(step, col("success_rate"), "o-", color="tab:green")
    axes[1].set_ylabel("eval success")
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].plot(step, col("cost_rate"), "o-", color="tab:red")
    axes[2].set_ylabel("eval cost / step")
    axes[3].plot(step, col("train_cost"), color="tab:purple")
    axes[3].set_ylabel("cumulative\ntraining cost")
    axes[3].set_xlabel("training steps")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run_dir.name}: envelope, success and cost")
    fig.tight_layout()
    target = Path(out) if out is not None else run_dir / "curves.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
