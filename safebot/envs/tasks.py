"""The three manipulation tasks: Reach, Push and Press.

Each is data (``tasks/<name>.toml``) plus the few hooks below: how a goal is
sampled, what the achieved goal is, and what extra state the policy observes.

Reward terms (ranges per step):
    sparse: -1 until the goal condition holds, 0 while it holds (HER-friendly).
    dense:  minus the goal distance (m for Reach/Push; m + normalised force error for Press).
Cost terms (0 or 1 per step, harm only, from the true physics; ``cost`` is their maximum):
    impact:      in some substep the summed normal force of a contact class (arm-table,
                 arm-object, object-table, arm-obstacle) exceeded its ``[cost] <class>_force``.
    obstacle:    any arm geom touching a keep-out geom (``cost.obstacle_contact``).
    joint_limit: any arm joint within ``cost.joint_limit_tolerance`` of its range (a strike).
    task:        Push: the block was knocked out of the workspace or off the table (once);
                 Press: the arm's force on the plate exceeded ``cost.plate_damage_force``.
Free-space speed is no cost; ``info["speed/ee"]`` reports it (m/s).
"""

from __future__ import annotations

import mujoco
import numpy as np

from safebot.envs.base import CONTACT_CLASSES, ArmTaskEnv
from safebot.envs.physics import F64
from safebot.spec import SpecError

GOAL_CLEARANCE = 0.05  # m added to the keep-out start margin when sampling Reach goals
# ee_site (panda_grasptarget) sits this far above the fingertips (measured: first plate
# contact at ee z = 0.038 over the plate top at 0.03)
FINGERTIP_DEPTH = 0.008
#: Press: fingertip height over the plate (m) that counts as -1 on the press coordinate
PRESS_HEIGHT_SCALE = 0.1


def _behind(goal: F64, centre: F64, half: F64, margin: float) -> bool:
    """Is ``goal`` beyond the box (seen from the arm's base, +x) and below its top? The arm
    reaches there only with its forearm on the box: no controller can do it without harm."""
    return bool(
        goal[0] > centre[0] + half[0]
        and abs(goal[1] - centre[1]) < half[1] + margin
        and goal[2] < centre[2] + half[2] + margin
    )


class ReachEnv(ArmTaskEnv):
    """Move the end effector to a sampled goal without touching the keep-out obstacle.

    Observation: arm state: q, qd, ee position, ee velocity (20 values), or with
    ``[robot] observation = "cartesian"`` (``tasks/reach.toml``) ee position and velocity (6).
    Goals are sampled in ``[goal]`` outside every believed keep-out box by the start margin
    plus ``GOAL_CLEARANCE``, and never behind a box below its top (the forearm would rest
    on it). The clearance is the hand's: the shield's spheres span the hand's ~21 cm, and
    at the start margin alone they stopped the hand short of goals beside the box (12-20
    points of success lost at width 1, docs/tasks.md).
    """

    goal_clearance: float = GOAL_CLEARANCE
    """m added to the keep-out start margin when sampling goals (a subclass may keep them
    farther from the box, as the reversibility experiment does)."""

    def _sample_goal(self, rng: np.random.Generator) -> F64:
        g = self.task.goal
        lo, hi = np.asarray(g.low), np.asarray(g.high)
        # the hand (~21 cm across its spheres) must fit beside the box at the widest margin
        margin = (
            self.task.limits.keepout.start if self.task.limits.keepout else 0.0
        ) + self.goal_clearance
        boxes = self.keepout_boxes()
        for _ in range(1000):
            goal = rng.uniform(lo, hi)
            if all(
                np.any(np.abs(goal - c) > h + margin) and not _behind(goal, c, h, margin)
                for c, h in boxes
            ):
                return goal
        raise SpecError(f"{self.task.source}: [goal] region lies inside the keep-out boxes")

    def _achieved_goal(self) -> F64:
        return self.physics.ee_pos()


class PushEnv(ArmTaskEnv):
    """Push a block across the table to a goal on the table.

    Observation: arm state (20, or 6 when Cartesian) + block position (3), block minus ee (3), block linear velocity (3).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._block_body = -1
        self._knocked = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _block(self) -> int:
        if self._block_body < 0:
            b = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "block")
            if b < 0:
                raise SpecError(
                    f"{self.task.source}: [robot.scene] the push scene has no body 'block'"
                )
            self._block_body = b
            j = self.model.body_jntadr[b]
            self._block_qadr = int(self.model.jnt_qposadr[j])
            self._block_dadr = int(self.model.jnt_dofadr[j])
            self._block_z = float(self.model.body_pos[b][2])
        return self._block_body

    def _reset_task(self, rng: np.random.Generator) -> None:
        self._block()
        g = self.task.goal
        # block starts in the near half of the goal region's x, anywhere along y
        x = rng.uniform(g.low[0], 0.5 * (g.low[0] + g.high[0]))
        y = rng.uniform(g.low[1], g.high[1])
        qa = self._block_qadr
        self._knocked = False
        # on the true table, wherever this episode's perception error put it
        self.data.qpos[qa : qa + 3] = (x, y, self._block_z + self.surface_error)
        self.data.qpos[qa + 3 : qa + 7] = (1.0, 0.0, 0.0, 0.0)

    def _sample_goal(self, rng: np.random.Generator) -> F64:
        g = self.task.goal
        lo, hi = np.asarray(g.low), np.asarray(g.high)
        block = self.data.qpos[self._block_qadr : self._block_qadr + 3]
        for _ in range(1000):
            goal = rng.uniform(lo, hi)
            goal[2] = block[2]
            if np.linalg.norm(goal[:2] - block[:2]) > 0.1:
                return goal
        return goal

    def _achieved_goal(self) -> F64:
        return self.data.qpos[self._block_qadr : self._block_qadr + 3].copy()

    def _task_harm(self, peak: F64) -> float:
        """1 on the step the block leaves the workspace (``[goal]`` region in x, y widened
        by ``cost.object_escape_margin``) or falls below the table top; once per episode."""
        if self._knocked:
            return 0.0
        g, margin = self.task.goal, self.task.cost.object_escape_margin
        p = self.data.qpos[self._block_qadr : self._block_qadr + 3]
        out = (
            p[0] < g.low[0] - margin
            or p[0] > g.high[0] + margin
            or p[1] < g.low[1] - margin
            or p[1] > g.high[1] + margin
            or p[2] < self.surface_error
        )
        self._knocked = bool(out)
        return float(out)

    def _task_obs(self) -> F64:
        block = self._achieved_goal()
        vel = self.data.qvel[self._block_dadr : self._block_dadr + 3]
        return np.concatenate([block, block - self.physics.ee_pos(), vel])


class PressEnv(ArmTaskEnv):
    """Touch the plate at a target point and hold a normal force inside a band.

    Goals are ``(x, y, p)`` with ``p`` the *press coordinate*: in contact, the
    normal force divided by ``goal.force_high``; above the plate, minus the
    fingertips' height over it divided by ``PRESS_HEIGHT_SCALE`` (0 at touch-down,
    -1 at 10 cm). The task's goals have ``p`` at the force band's centre. The
    step condition holds when the end effector is within ``goal.threshold`` of
    the target in xy and ``p`` is within half the band's width of the goal's: for
    the task's goals exactly "force inside ``[force_low, force_high]``". The task
    succeeds once it has held for ``goal.hold_steps`` consecutive steps.

    Why not the force alone: it is 0 everywhere above the plate, so HER's
    relabelled goals (the forces the episode achieved) and the dense reward
    carried no sign of the way down. With the height below zero, a relabelled
    goal teaches reaching a point over the plate, and the dense reward falls
    toward the plate.

    Observation: arm state (20, or 6 when Cartesian) + normalised plate force (1) + target minus ee in xy (2).
    """

    goal_dim = 3

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._plate_geom = -1
        self._hold = 0
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # the arm's force on the plate is judged by the plate's damage force (the task term)
        self._judged[CONTACT_CLASSES.index("arm_object")] = False

    def _task_harm(self, peak: F64) -> float:
        """1 if in some substep the arm pressed the plate harder than ``cost.plate_damage_force``."""
        k = CONTACT_CLASSES.index("arm_object")
        return float(peak[k] > self.task.cost.plate_damage_force)

    def _plate(self) -> int:
        if self._plate_geom < 0:
            g = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "plate_geom")
            if g < 0:
                raise SpecError(
                    f"{self.task.source}: [robot.scene] the press scene has no geom 'plate_geom'"
                )
            self._plate_geom = g
        return self._plate_geom

    def plate_force(self) -> float:
        """Total normal force (N) between the arm and the plate."""
        plate = self._plate()
        total = 0.0
        f6 = np.zeros(6)
        d = self.data
        for i in range(d.ncon):
            c = d.contact[i]
            if (c.geom1 == plate and self.physics.arm_geom[c.geom2]) or (
                c.geom2 == plate and self.physics.arm_geom[c.geom1]
            ):
                mujoco.mj_contactForce(self.model, d, i, f6)
                total += abs(f6[0])
        return total

    def _reset_task(self, rng: np.random.Generator) -> None:
        self._plate()
        self._hold = 0

    def _sample_goal(self, rng: np.random.Generator) -> F64:
        g = self.task.goal
        xy = rng.uniform(g.low[:2], g.high[:2])
        target = 0.5 * (g.force_low + g.force_high) / g.force_high
        return np.array([xy[0], xy[1], target])

    def plate_top(self) -> float:
        """Height (m) of the plate's top face."""
        plate = self._plate()
        return float(self.data.geom_xpos[plate][2] + self.model.geom_size[plate][2])

    def believed_plate_top(self) -> float:
        """Height (m) of the plate's top face as the controller believes it (without this
        episode's ``[uncertainty] surface_sigma`` error): what a controller plans with."""
        return self.plate_top() - self.surface_error

    def press_coordinate(self) -> float:
        """``force / force_high`` in contact, ``-height / PRESS_HEIGHT_SCALE`` above the plate."""
        force = self.plate_force()
        if force > 0.0:
            return force / self.task.goal.force_high
        height = self.physics.ee_pos()[2] - FINGERTIP_DEPTH - self.plate_top()
        return -max(height, 0.0) / PRESS_HEIGHT_SCALE

    def _achieved_goal(self) -> F64:
        ee = self.physics.ee_pos()
        return np.array([ee[0], ee[1], self.press_coordinate()])

    def _goal_reached(self, achieved: F64, desired: F64) -> F64:
        g = self.task.goal
        near = np.linalg.norm(achieved[..., :2] - desired[..., :2], axis=-1) < g.threshold
        half_band = 0.5 * (g.force_high - g.force_low) / g.force_high
        in_band = np.abs(achieved[..., 2] - desired[..., 2]) <= half_band + 1e-12
        return (near & in_band).astype(np.float64)

    def _goal_distance(self, achieved: F64, desired: F64) -> F64:
        xy = np.linalg.norm(achieved[..., :2] - desired[..., :2], axis=-1)
        return np.asarray(xy + np.abs(achieved[..., 2] - desired[..., 2]), dtype=np.float64)

    def _after_step(self) -> None:
        held = bool(self._goal_reached(self._achieved_goal(), self._goal))
        self._hold = self._hold + 1 if held else 0

    def _is_success(self, achieved: F64) -> bool:
        return self._hold >= self.task.goal.hold_steps

    def _goal_marker(self) -> F64:
        return np.array([self._goal[0], self._goal[1], self.plate_top()])

    def _task_obs(self) -> F64:
        ee = self.physics.ee_pos()
        force = self.plate_force() / self.task.goal.force_high
        return np.array([force, self._goal[0] - ee[0], self._goal[1] - ee[1]])


TASK_CLASSES: dict[str, type[ArmTaskEnv]] = {"reach": ReachEnv, "push": PushEnv, "press": PressEnv}
