"""Scripted controllers for Reach, Push and Press, and what the envelope width does to them.

Each controller is a plain function ``policy(env) -> action``: it reads the
task's state from ``env.unwrapped`` (goal, end-effector position, block, plate
force), decides an end-effector velocity in m/s, and turns it into a normalised
action in [-1, 1] for either action mode (:func:`ee_velocity_action`). Far from
its target a controller asks for *more* than any envelope allows, so the action
saturates and the shield decides the speed: a tight envelope (width 0) runs out
of time, a loose one (width 1) lets the arm close enough to the believed
obstacles and surfaces, and fast enough, for the map error to turn into harm
(contact, impacts). The naive controllers leave all of that to the shield, the
careful ones keep their own clearance; the measured tables are in ``docs/tasks.md``.

Example:
    >>> from safebot.scripted import evaluate_scripted
    >>> evaluate_scripted("reach", width=1.0, episodes=5, seed=0)["success_rate"]

Command line (prints the markdown table of ``docs/tasks.md``)::

    python -m safebot.scripted reach --episodes 20
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from safebot.envs import COST_TERMS, ArmTaskEnv, PressEnv, PushEnv
from safebot.envs import make as make_env
from safebot.envs.physics import F64, ee_velocity_map
from safebot.envs.tasks import FINGERTIP_DEPTH
from safebot.kernels import solve
from safebot.shield import Shield
from safebot.spec import TaskSpec

Policy = Callable[[gym.Env[Any, Any]], np.ndarray]

# --- Reach
REACH_GAIN = 6.0  # 1/s: saturates beyond ~0.17 m at the 1 m/s cap
# m kept around a keep-out box by the planned path (hand and wrist are bulky)
REACH_CLEARANCE = 0.06
# m kept between a believed box and the end effector at the goal: the hand is ~20 cm across
# its fingers, so a goal beside a box is approached only to here (within the 5 cm success
# distance of goals 8 cm off the map's box), where the shield's spheres along the hand
# (tasks/reach.toml) still clear the box by the cap margin instead of stopping it above
REACH_GOAL_CLEARANCE = 0.12
REACH_CARE_TIME = 0.05  # s: the clearance grows by this much travel at the current speed
# Near a box the careful controller aims inside the success ball, not at its centre: this
# many standard deviations of the map error ([uncertainty] keepout_sigma) farther from the
# believed box, at most REACH_AIM_BALL of the goal threshold. Beside a box: away from it and
# up (the forearm comes down over the box's top edge to a low goal beside it); in front of it
# (between the box and the robot): back and up (the wrist leans over the front top edge).
REACH_AIM_SIGMAS = 3.0
REACH_AIM_BALL = 0.9
REACH_AIM_NEAR = 0.25  # m: goals farther than this from every box are aimed at directly
# The careful controller also keeps the links above the hand (wrist, forearm: the task's
# keep-out spheres on the hand's ancestors) REACH_AIM_SIGMAS map errors clear of the believed
# box, by its own filter of its command (arm_guard); it approaches that margin at this rate
REACH_GUARD_GAIN = 10.0  # 1/s
REACH_GUARD_RANGE = 0.05  # m beyond the margin at which a link starts to be watched

# --- Push
BLOCK_HALF = 0.025  # m, half the cube's edge (scene_push.xml)
# ee height over the table while pushing: fingertips 3.4 cm up, 1.6 cm below the block's top
PUSH_HEIGHT = 0.042
PUSH_NAIVE_LOW = 0.05  # the naive pusher pushes from any height below the block's top
PUSH_DOWN_MAX = 0.03  # m/s: the careful pusher's fastest correction down (not onto the block)
PUSH_TOUCH_SPEED = 0.08  # m/s: the careful pusher's speed as the fingers meet the block
PUSH_SAFE_HEIGHT = 0.09  # ee height that clears the block (fingertips 3.4 cm above its top)
PUSH_STANDOFF = 0.065  # m behind the block centre where a push starts
PUSH_CONTACT = BLOCK_HALF + 0.012  # ee-to-centre distance when the fingers touch the rear face
PUSH_ALIGN_TOL = 0.015  # m: lateral offset from the block-goal line still worth pushing
PUSH_GAIN = 6.0  # 1/s: transit toward waypoints
PUSH_DOWN_GAIN = 20.0  # 1/s: hold the push height against the fingers riding up
PUSH_START_TOL = 0.008  # m above PUSH_HEIGHT at which a push may start
PUSH_RIDE = 0.018  # m above PUSH_HEIGHT still counted as pushing (fingertips below the block top)
PUSH_MIN_SPEED = 0.05  # m/s: push speed at the goal, so the last millimetres are covered
PUSH_SPEED_GAIN = 4.0  # 1/s: push speed per metre to go; the block slides ~v^2/(2 mu g) after
PUSH_LATERAL_GAIN = 8.0  # 1/s: steer back onto the block-goal line while pushing
PUSH_DONE = 0.015  # m: block this close to the goal -> stop

# --- Press
# m above the believed contact height where the guarded descent reaches its slow speed:
# more than 3 sigma of the plate's height error (tasks/press.toml [uncertainty])
PRESS_HOVER = 0.035
PRESS_NAIVE_HOVER = 0.02  # m: both controllers travel to the target this high over the plate
PRESS_NAIVE_SPEED = 2.0  # m/s asked for by the naive descent (saturates at any envelope)
PRESS_GAIN = 6.0  # 1/s: transit toward the hover point
PRESS_APPROACH_SPEED = 0.03  # m/s: speed at touch-down (impact force grows with it)
PRESS_XY_TOL = 0.01  # m: descend only when this close to the target in xy
# N per m/s: the velocity servos (kv = 600) press with a force about proportional to the
# commanded speed into the plate (measured: 0.01 m/s -> 20 N)
PRESS_FORCE_PER_SPEED = 2000.0
PRESS_FORCE_GAIN = 1.0e-3  # m/s per N: force-feedback P term on the vertical velocity


def task_env(env: gym.Env[Any, Any]) -> ArmTaskEnv:
    """The safebot task under any wrappers (Shield, TimeLimit, ...)."""
    inner = env.unwrapped
    if not isinstance(inner, ArmTaskEnv):
        raise TypeError(f"scripted controllers need a safebot task env, got {type(inner).__name__}")
    return inner


def ee_velocity_action(env: ArmTaskEnv, v: F64) -> np.ndarray:
    """Normalised action that asks for end-effector velocity ``v`` (m/s).

    In ``joint_velocity`` mode ``v`` maps to joint velocities through the damped
    pseudo-inverse of the end-effector Jacobian. The action is scaled down as a
    whole (direction kept) when an entry would leave [-1, 1]: asking for more
    than the hard caps saturates at the caps.
    """
    v = np.asarray(v, dtype=np.float64)
    if env.action_mode == "joint_velocity":
        M, _ = ee_velocity_map(env.physics.ee_jacobian())  # the env's own ee_velocity mapping
        u = M @ v
    else:
        u = v
    a = u / env.action_scale
    peak = float(np.max(np.abs(a), initial=0.0))
    if peak > 1.0:
        a = a / peak
    return a.astype(np.float32)


# --------------------------------------------------------------------------- Reach


def _segment_hits_box(p: F64, q: F64, lo: F64, hi: F64) -> bool:
    """Slab test: does the segment ``p -> q`` cross the box ``[lo, hi]``?"""
    d = q - p
    t0, t1 = 0.0, 1.0
    for i in range(3):
        if abs(d[i]) < 1e-12:
            if not lo[i] <= p[i] <= hi[i]:
                return False
            continue
        a, b = sorted(((lo[i] - p[i]) / d[i], (hi[i] - p[i]) / d[i]))
        t0, t1 = max(t0, a), min(t1, b)
        if t0 > t1:
            return False
    return True


def reach_waypoint(
    ee: F64, goal: F64, boxes: Sequence[tuple[F64, F64]], clearance: float = REACH_CLEARANCE
) -> F64:
    """The goal itself, or a point over the first keep-out box the straight line would cross.

    Over, not around: the obstacle is wide in y and the goals lie on both sides
    of it. Rise vertically until above the box (plus ``clearance``), then head
    for the point above the goal, then down.
    """
    for centre, half in boxes:
        lo, hi = centre - half - clearance, centre + half + clearance
        if _segment_hits_box(ee, goal, lo, hi):
            top = float(hi[2])
            if ee[2] < top - 0.01:
                return np.array([ee[0], ee[1], top + 0.02])
            return np.array([goal[0], goal[1], top + 0.01])
    return np.asarray(goal, dtype=np.float64)


def _outside(p: F64, boxes: Sequence[tuple[F64, F64]], clearance: float) -> F64:
    """``p`` moved out of every box grown by ``clearance``, through its nearest face."""
    p = np.asarray(p, dtype=np.float64).copy()
    for centre, half in boxes:
        d = p - centre
        gap = np.abs(d) - (half + clearance)
        if np.all(gap < 0.0):
            i = int(np.argmax(gap))
            p[i] = centre[i] + np.copysign(half[i] + clearance, d[i])
    return p


def reach_aim(goal: F64, boxes: Sequence[tuple[F64, F64]], offset: float) -> F64:
    """The point ``offset`` m from ``goal`` away from each box nearer than ``REACH_AIM_NEAR``.

    Away means along the axis that separates the goal from the box most (its nearest
    face's normal); beside the box (y) and in front of it (the robot's side, -x) the
    direction is tilted 45 degrees up, which lifts the forearm and the wrist off the box's
    top edge (alone, without :func:`arm_guard`, it raised success from 93.4 to 96.4 % on
    2 000 episodes at width 1; docs/tasks.md).
    """
    aim = np.asarray(goal, dtype=np.float64).copy()
    for centre, half in boxes:
        gap = np.abs(aim - centre) - half
        i = int(np.argmax(gap))
        if gap[i] >= REACH_AIM_NEAR:
            continue
        away = np.zeros(3)
        away[i] = math.copysign(1.0, aim[i] - centre[i])
        if i == 1 or (i == 0 and aim[0] < centre[0]):
            away[2] = 1.0
        aim += offset * away / np.linalg.norm(away)
    return aim


def _box_gap(p: F64, radius: float, centre: F64, half: F64) -> tuple[float, F64]:
    """Distance from a sphere's surface to a box (negative: the centre is inside), and the
    unit normal from the box's nearest point toward the sphere (zero inside)."""
    d = p - np.clip(p, centre - half, centre + half)
    n = float(np.linalg.norm(d))
    if n < 1e-9:
        return -radius, np.zeros(3)
    return n - radius, d / n


def guarded_sites(env: ArmTaskEnv) -> list[int]:
    """The task's keep-out sites on the links above the hand (its body's ancestors)."""
    m = env.model
    hand = int(m.site_bodyid[env.physics.ee_site_id])
    above, body = set(), int(m.body_parentid[hand])
    while body > 0:
        above.add(body)
        body = int(m.body_parentid[body])
    return [int(s) for s in env.kinematics.keepout_sites if int(m.site_bodyid[s]) in above]


def arm_guard(env: ArmTaskEnv, v: F64, margin: float, sites: Sequence[int]) -> F64:
    """``v`` (end-effector velocity, m/s) changed least so that no sphere of ``sites``
    closes on a believed keep-out box faster than ``REACH_GUARD_GAIN * (gap - margin)``.

    Each sphere within ``margin + REACH_GUARD_RANGE`` of a box gives one linear row in
    ``v`` (its velocity is ``J_site M v``, ``M`` the env's ``ee_velocity`` map), and
    the exact projection kernel the shield runs (:func:`safebot.kernels.solve`) finds
    the least change. It is the careful controller's own care, on top of the shield,
    which keeps the same spheres only the cap margin (1 sigma) clear.
    """
    M, _ = ee_velocity_map(env.physics.ee_jacobian())
    boxes = env.keepout_boxes()
    rows, rhs = [], []
    for s in sites:
        p, r = env.data.site_xpos[s], float(env.model.site_size[s, 0])
        for centre, half in boxes:
            gap, normal = _box_gap(p, r, centre, half)
            if gap < margin + REACH_GUARD_RANGE:  # closing speed <= gain * (gap - margin)
                rows.append(-(normal @ env.physics.site_jacobian(s) @ M))
                rhs.append(REACH_GUARD_GAIN * (gap - margin))
    if not rows:
        return v
    return solve(v, rows, rhs).action


def reach_policy(env: gym.Env[Any, Any]) -> np.ndarray:
    """Careful Reach: proportional end-effector velocity toward the goal, over the keep-out
    box with a clearance that grows with its speed (``REACH_CLEARANCE`` + ``REACH_CARE_TIME``
    seconds of travel); near a box it aims inside the success ball, 3 sigma of the map error
    farther from the box than the goal (:func:`reach_aim`), and it keeps the wrist and
    forearm 3 sigma clear of the believed box (:func:`arm_guard`)."""
    base = task_env(env)
    ee = base.physics.ee_pos()
    speed = float(np.linalg.norm(base.physics.ee_vel()))
    clearance = REACH_CLEARANCE + REACH_CARE_TIME * speed
    boxes = base.keepout_boxes()
    goal = _outside(base.goal, boxes, REACH_GOAL_CLEARANCE)
    sigmas = REACH_AIM_SIGMAS * base.task.uncertainty.keepout_sigma
    goal = reach_aim(goal, boxes, min(sigmas, REACH_AIM_BALL * base.task.goal.threshold))
    target = reach_waypoint(ee, goal, boxes, clearance)
    v = arm_guard(base, REACH_GAIN * (target - ee), sigmas, guarded_sites(base))
    return ee_velocity_action(base, v)


def naive_reach_policy(env: gym.Env[Any, Any]) -> np.ndarray:
    """Naive Reach: straight at the goal at full speed; the obstacle is the shield's business."""
    base = task_env(env)
    ee = base.physics.ee_pos()
    return ee_velocity_action(base, REACH_GAIN * (base.goal - ee))


# --------------------------------------------------------------------------- Push


def _body_pos(env: ArmTaskEnv, name: str) -> F64:
    b = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, name)
    return np.asarray(env.data.xpos[b], dtype=np.float64).copy()


def push_policy(env: gym.Env[Any, Any]) -> np.ndarray:
    """Careful Push: get behind the block, come down to ``PUSH_HEIGHT`` over the table
    *where the block it sees stands* (not where the map says the table is), touch the
    block slowly, push it along the line to the goal.

    Decided afresh each step from the block, the goal and the end effector, so a
    block that drifts off the line is re-approached:

    * pushing: the fingers are behind the block on the block-goal line and low;
      close the gap at ``PUSH_TOUCH_SPEED`` (an impact on the block is harm), then
      move along the line (speed falling with the distance to go, so the block
      does not slide past the goal) and steer back onto it laterally;
    * behind the block but off the line or high: go straight to the start point
      of the push (``PUSH_STANDOFF`` behind the block), descending on the way;
    * beside or in front of the block: rise to ``PUSH_SAFE_HEIGHT``, then pass
      over the block to above the start point.
    """
    return _push(
        env, height=None, low_max=None, touch_speed=PUSH_TOUCH_SPEED, down_max=PUSH_DOWN_MAX
    )


def naive_push_policy(env: gym.Env[Any, Any]) -> np.ndarray:
    """Naive Push: the careful pusher's plan, but pushing as low as the shield lets it (it
    aims at the believed table top) and hitting the block at whatever speed it has."""
    return _push(env, height=0.0, low_max=PUSH_NAIVE_LOW, touch_speed=math.inf, down_max=math.inf)


def _push(
    env: gym.Env[Any, Any],
    height: float | None,
    low_max: float | None,
    touch_speed: float,
    down_max: float,
) -> np.ndarray:
    base = task_env(env)
    if not isinstance(base, PushEnv):
        raise TypeError(f"push controllers need the push task, got {type(base).__name__}")
    ee = base.physics.ee_pos()
    block = _body_pos(base, "block")
    if height is None:
        # the block it sees stands on the true table: push from its height, not the map's
        height = block[2] + PUSH_HEIGHT - BLOCK_HALF
    goal = base.goal
    to_goal = goal[:2] - block[:2]
    dist = float(np.linalg.norm(to_goal))
    if dist < PUSH_DONE:
        return ee_velocity_action(base, np.zeros(3))
    u = to_goal / dist
    n = np.array([-u[1], u[0]])
    rel = ee[:2] - block[:2]
    along, lateral = float(rel @ u), float(rel @ n)
    start = block[:2] - PUSH_STANDOFF * u

    # A push starts with the fingertips in the lower part of the block's face; once in
    # contact the tapered fingers ride up a little (pushing sideways to them), which is
    # tolerated up to PUSH_RIDE and countered by pressing down.
    touching = along > -PUSH_CONTACT - 0.01
    if low_max is None:
        low = ee[2] < height + (PUSH_RIDE if touching else PUSH_START_TOL)
    else:
        low = ee[2] < low_max
    if (
        low
        and -PUSH_STANDOFF - 0.03 < along < -PUSH_CONTACT + 0.01
        and abs(lateral) < PUSH_ALIGN_TOL
    ):
        speed = PUSH_SPEED_GAIN * dist + PUSH_MIN_SPEED
        if along < -PUSH_CONTACT - 0.002:  # not touching yet
            speed = min(speed, touch_speed)
        v_xy = speed * u - PUSH_LATERAL_GAIN * lateral * n
        v_z = max(PUSH_DOWN_GAIN * (height - ee[2]), -down_max)
        return ee_velocity_action(base, np.array([v_xy[0], v_xy[1], v_z]))
    # half-diagonal of the cube plus the fingers: behind this the way to the start is clear
    if along < -(BLOCK_HALF * math.sqrt(2.0) + 0.015):
        target = np.array([start[0], start[1], height])
    elif ee[2] < PUSH_SAFE_HEIGHT - 0.01 and float(np.linalg.norm(rel)) < PUSH_STANDOFF + 0.03:
        target = np.array([ee[0], ee[1], PUSH_SAFE_HEIGHT + 0.01])
    else:
        target = np.array([start[0], start[1], PUSH_SAFE_HEIGHT])
    return ee_velocity_action(base, PUSH_GAIN * (target - ee))


# --------------------------------------------------------------------------- Press


def press_policy(env: gym.Env[Any, Any]) -> np.ndarray:
    """Careful Press: above the target, guarded descent onto the plate, then regulate the force.

    The descent slows to ``PRESS_APPROACH_SPEED`` ``PRESS_HOVER`` above where it believes
    the plate is (3 sigma of the height error and more), so the plate is touched slowly
    wherever it really is. In contact the vertical velocity is a feed-forward for the
    band centre plus a force-feedback P term: the arm's velocity servos press with a
    force roughly proportional to the commanded speed into the plate
    (``PRESS_FORCE_PER_SPEED``), so the force settles near the band centre and the
    target is then held.
    """
    return _press(env, hover=PRESS_HOVER, approach_speed=PRESS_APPROACH_SPEED)


def naive_press_policy(env: gym.Env[Any, Any]) -> np.ndarray:
    """Naive Press: straight down at full speed to where it believes the plate is (the
    shield's contact-force limit is left to stop it), then the careful force regulation."""
    return _press(env, hover=0.0, approach_speed=math.inf)


def _press(env: gym.Env[Any, Any], hover: float, approach_speed: float) -> np.ndarray:
    base = task_env(env)
    if not isinstance(base, PressEnv):
        raise TypeError(f"press controllers need the press task, got {type(base).__name__}")
    g = base.task.goal
    ee = base.physics.ee_pos()
    target_xy = base.goal[:2]
    xy_err = target_xy - ee[:2]
    touch_z = base.believed_plate_top() + FINGERTIP_DEPTH
    force = base.plate_force()
    if force > 0.0:
        f_ref = 0.5 * (g.force_low + g.force_high)
        v_z = -(f_ref / PRESS_FORCE_PER_SPEED + PRESS_FORCE_GAIN * (f_ref - force))
        v_xy = PRESS_GAIN * xy_err
        return ee_velocity_action(base, np.array([v_xy[0], v_xy[1], v_z]))
    if float(np.linalg.norm(xy_err)) > PRESS_XY_TOL:
        above = np.array([target_xy[0], target_xy[1], touch_z + max(hover, PRESS_NAIVE_HOVER)])
        return ee_velocity_action(base, PRESS_GAIN * (above - ee))
    # guarded descent: proportional to the height over the slow-down point, then constant
    if math.isinf(approach_speed):
        # trusts the map: full speed down to where it believes the plate is, then slow
        below = ee[2] < touch_z
        v_z = -PRESS_APPROACH_SPEED if below else -PRESS_NAIVE_SPEED
    else:
        v_z = -max(PRESS_GAIN * (ee[2] - touch_z - hover), approach_speed)
    v_xy = PRESS_GAIN * xy_err
    return ee_velocity_action(base, np.array([v_xy[0], v_xy[1], v_z]))


POLICIES: dict[str, Policy] = {"reach": reach_policy, "push": push_policy, "press": press_policy}
"""Careful scripted controller per task kind (``[task] kind``): the demonstrations' teacher."""

NAIVE_POLICIES: dict[str, Policy] = {
    "reach": naive_reach_policy,
    "push": naive_push_policy,
    "press": naive_press_policy,
}
"""Naive controller per task kind: straight at the target at full speed, safety left to the
shield (what a policy trained inside the shield tends to learn)."""

CONTROLLERS = {"careful": POLICIES, "naive": NAIVE_POLICIES}


# --------------------------------------------------------------------------- evaluation


def _shielded(task: str | Path | TaskSpec, controller: str) -> tuple[Shield, Policy]:
    """The task inside a :class:`~safebot.shield.Shield`, and the named controller for it."""
    if controller not in CONTROLLERS:
        raise ValueError(f"controller must be one of {sorted(CONTROLLERS)}, got {controller!r}")
    env = Shield(make_env(task))
    return env, CONTROLLERS[controller][env.unwrapped.task.task.kind]  # type: ignore[attr-defined]


def evaluate_scripted(
    task: str | Path | TaskSpec,
    width: float,
    episodes: int = 20,
    seed: int = 0,
    controller: str = "careful",
) -> dict[str, float]:
    """Run a scripted controller of the task inside :class:`~safebot.shield.Shield` at ``width``.

    Episodes use seeds ``seed, seed + 1, ...`` (each draws its own perception error,
    ``[uncertainty]``) and always run to the episode length, as the training's held-out
    evaluation does: success is ``info["is_success"]`` at the last step; harm is
    ``info["cost"]`` summed over the episode (steps with harm).

    Args:
        task: a shipped task name (``"reach"``, ``"reach_joint"``, ...), a TOML path or a spec.
        width: envelope width in [0, 1] (0 = start bounds, 1 = hard caps).
        episodes: number of episodes.
        seed: seed of the first episode.
        controller: ``"careful"`` (:data:`POLICIES`) or ``"naive"`` (:data:`NAIVE_POLICIES`).

    Returns:
        ``success_rate``, ``harm_per_episode`` (mean harm steps per episode),
        ``harm_episodes`` (fraction of episodes with any harm), ``cost_rate`` (harm per
        step), ``mean_steps_to_success`` (first step at which ``is_success`` held, over the
        successful episodes; NaN if none), ``intervention_rate``, ``mean_speed`` (m/s) and
        ``cost/<term>`` (harm steps per episode of each term).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env, policy = _shielded(task, controller)
    env.set_width(width)
    successes = 0
    first_success: list[int] = []
    steps = 0
    cost = 0.0
    harmed = 0
    interventions = 0
    speed = 0.0
    terms = dict.fromkeys(COST_TERMS, 0.0)
    try:
        for ep in range(episodes):
            env.reset(seed=seed + ep)
            done, t, first, ep_cost = False, 0, -1, 0.0
            info: dict[str, Any] = {}
            while not done:
                _, _, terminated, truncated, info = env.step(policy(env))
                t += 1
                done = terminated or truncated
                ep_cost += float(info["cost"])
                interventions += bool(info["shield/intervened"])
                speed += float(info["speed/ee"])
                for k in COST_TERMS:
                    terms[k] += float(info[f"cost/{k}"])
                if first < 0 and info["is_success"]:
                    first = t
            steps += t
            cost += ep_cost
            harmed += ep_cost > 0
            if info["is_success"]:
                successes += 1
                first_success.append(first)
    finally:
        env.close()
    out = {
        "success_rate": successes / episodes,
        "harm_per_episode": cost / episodes,
        "harm_episodes": harmed / episodes,
        "cost_rate": cost / steps,
        "mean_steps_to_success": float(np.mean(first_success)) if first_success else math.nan,
        "intervention_rate": interventions / steps,
        "mean_speed": speed / steps,
    }
    out.update({f"cost/{k}": v / episodes for k, v in terms.items()})
    return out


def sweep(
    task: str | Path | TaskSpec, widths: Sequence[float], episodes: int, seed: int
) -> dict[str, list[dict[str, float]]]:
    """Both controllers at every width: ``{"naive": [row per width], "careful": [...]}``."""
    return {
        c: [{"width": float(w), **evaluate_scripted(task, w, episodes, seed, c)} for w in widths]
        for c in ("naive", "careful")
    }


def scheduled(
    task: str | Path | TaskSpec,
    evaluations: int,
    episodes: int = 20,
    seed: int = 0,
    controller: str = "careful",
) -> list[dict[str, Any]]:
    """A scripted controller as the policy under the task's own ``[scheduler]``, no learning.

    Each of ``evaluations`` rounds runs ``episodes`` held-out episodes at the
    scheduler's width (new seeds every round, as a training run's evaluations
    draw them) and hands the statistics to the scheduler, exactly as
    :class:`~safebot.train.EnvelopeCallback` does for a learner. It asks whether
    the scheduler's thresholds can be met at all: a task on which even its
    scripted controller never widens the envelope is a task on which no learner
    of that skill will either. One row per evaluation: the width it ran at, the
    width after, success, harm per episode and the scheduler's reason.
    """
    from safebot.schedulers import make_scheduler
    from safebot.train.evaluation import evaluate

    if evaluations < 1 or episodes < 1:
        raise ValueError(f"evaluations and episodes must be >= 1, got {evaluations}, {episodes}")
    env, policy = _shielded(task, controller)
    sched = make_scheduler(env.unwrapped.task.scheduler, env.envelope.kinds)  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    try:
        for k in range(evaluations):
            width = sched.width
            env.set_width(width)
            result = evaluate(
                lambda _obs: policy(env), env, episodes=episodes, seed=seed + 1000 * k, step=k
            )
            sched.update(result.stats)
            rows.append(
                {
                    "evaluation": k,
                    "width": _mean_width(width),
                    "next_width": _mean_width(sched.width),
                    "success_rate": result.stats.success_rate,
                    "harm_per_episode": result.stats.harm_per_episode,
                    "reason": sched.history[-1][2] if sched.history else "",
                }
            )
    finally:
        env.close()
    return rows


def _mean_width(w: float | dict[str, float]) -> float:
    return float(np.mean(list(w.values()))) if isinstance(w, dict) else float(w)


def markdown_table(rows: Sequence[dict[str, float]]) -> str:
    """One controller's width sweep as a markdown table (the ones in ``docs/tasks.md``)."""
    head = (
        "| width | success | harm / episode | episodes with harm | steps to success | "
        + " | ".join(f"{k}" for k in COST_TERMS)
        + " | mean speed (m/s) | shield intervened |"
    )
    lines = [head, "|" + " --- |" * (7 + len(COST_TERMS))]
    for r in rows:
        steps = r["mean_steps_to_success"]
        lines.append(
            f"| {r['width']:g} | {r['success_rate']:.0%} | {r['harm_per_episode']:.2f} | "
            f"{r['harm_episodes']:.0%} | "
            + ("–" if math.isnan(steps) else f"{steps:.1f}")
            + " | "
            + " | ".join(f"{r[f'cost/{k}']:.2f}" for k in COST_TERMS)
            + f" | {r['mean_speed']:.2f} | {r['intervention_rate']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m safebot.scripted",
        description="Success and harm of a task's naive and careful scripted controllers "
        "at several envelope widths.",
    )
    parser.add_argument(
        "task", help="shipped task name (reach, reach_joint, push, press) or TOML path"
    )
    parser.add_argument("--episodes", type=int, default=50, help="episodes per width (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    parser.add_argument(
        "--widths",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="default: 0 0.25 0.5 0.75 1",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--schedule",
        type=int,
        default=None,
        metavar="N",
        help="instead of the width sweep: N evaluations of --episodes each under the task's "
        "own [scheduler], each controller as the policy (can competence at width 0 widen it?)",
    )
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if any(not 0.0 <= w <= 1.0 for w in args.widths):
        parser.error("--widths must lie in [0, 1]")
    if args.schedule is not None:
        return _schedule_main(args)
    result = sweep(args.task, args.widths, args.episodes, args.seed)
    for c in ("naive", "careful"):
        print(
            f"{args.task}: {c} controller, {args.episodes} episodes per width, "
            f"seeds {args.seed}..{args.seed + args.episodes - 1}\n"
        )
        print(markdown_table(result[c]) + "\n")
    _write_json(args, f"--episodes {args.episodes}", result)
    return 0


def _write_json(args: argparse.Namespace, options: str, result: dict[str, Any]) -> None:
    """``--json``: the rows, with the command that made them."""
    if args.json is None:
        return
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "task": str(args.task),
        "episodes": args.episodes,
        "seed": args.seed,
        "command": f"python -m safebot.scripted {args.task} {options} --seed {args.seed} "
        f"--json {args.json}",
        **result,
    }
    args.json.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")


def _schedule_main(args: argparse.Namespace) -> int:
    if args.schedule < 1:
        raise SystemExit("--schedule must be >= 1")
    result = {
        c: scheduled(args.task, args.schedule, args.episodes, args.seed, c)
        for c in ("naive", "careful")
    }
    for c, rows in result.items():
        print(f"{args.task}: {c} controller under the task's [scheduler], {args.episodes} "
              "episodes per evaluation\n")  # fmt: skip
        print("| evaluation | width | success | harm / episode | scheduler |")
        print("| --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| {r['evaluation']} | {r['width']:.2f} | {r['success_rate']:.0%} | "
                f"{r['harm_per_episode']:.2f} | {r['reason']} |"
            )
        print()
    _write_json(args, f"--schedule {args.schedule} --episodes {args.episodes}", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
