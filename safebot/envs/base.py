"""The goal-conditioned MuJoCo arm environment that every safebot task shares.

Actions are in [-1, 1]^k and scale to the task's *hard caps* (the action space
never changes as the envelope widens; the shield projects inside it). In
``joint_velocity`` mode an action is the seven arm joint velocities; in
``ee_velocity`` mode it is the end effector's linear velocity, mapped to joint
velocities by a damped pseudo-inverse (:func:`ee_velocity_map`). Either way the
command that reaches the velocity servos is affine in the physical action,
``qd = M u + c`` (:meth:`ArmTaskEnv.action_map`), which is what lets the shield
write every joint-space limit as a row on ``u``.

Observations (``[robot] observation``): ``"full"`` is the arm's joint positions and
velocities, the end-effector position and velocity, then the task's entries;
``"cartesian"`` (``ee_velocity`` only) leaves the joint state out, so the policy sees
nothing that ties it to the Panda's seven joints and ``safebot deploy`` can run it on
another arm (docs/deploy.md, *Retargeting*).

The arm is data (:meth:`ArmTaskEnv.kinematics`): its joints are the ones the scene's
velocity servos drive, in actuator order; the gripper is the scene's position actuator
and the joints coupled to it. Nothing here names the Panda's joints.

Costs measure harm only (docs/design.md, rule 5): every substep is checked and a
step's cost term is 1 if any substep crossed its threshold (forces per contact class,
obstacle contact, joint-limit strikes, the task's own harm). Speed is a measurement
(``info["speed/ee"]``), never a cost.

Uncertainty is explicit (rule 6, ``[uncertainty]``): each episode draws the error
between what the controller believes and the truth. The keep-out map
(:meth:`ArmTaskEnv.keepout_boxes`, which the shield reads) is the true boxes plus an
offset; the true table (and what stands on it) is moved from the height the spec's
workspace floor and goals assume; the object's mass and friction are drawn. Physics
and costs always see the truth. :meth:`ArmTaskEnv.set_perception_scale` scales the
sigmas at run time, so an experiment can make the world drift mid-run.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from safebot.envs.physics import F64, ArmPhysics, arm_observation, ee_velocity_map
from safebot.resources import resolve
from safebot.shield.kinematics import ArmKinematics
from safebot.spec import SpecError, TaskSpec, load_task

COST_TERMS = ("impact", "obstacle", "joint_limit", "task")
#: contact classes judged by a force threshold (``[cost] <class>_force``), in this order
CONTACT_CLASSES = ("arm_table", "arm_object", "object_table", "arm_obstacle")
# geom classes
_OTHER, _ARM, _TABLE, _OBJECT, _OBSTACLE = range(5)

# Fingers held 1 cm apart: a narrow pusher that does not press the fingers into each other
GRIPPER_OPENING = 0.01

__all__ = [
    "CONTACT_CLASSES",
    "COST_TERMS",
    "ArmTaskEnv",
    "arm_actuators",
    "ee_velocity_map",
    "load_scene",
]


def _joint_name(model: mujoco.MjModel, act: int) -> str:
    return (
        mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(model.actuator_trnid[act, 0])) or ""
    )


def arm_actuators(model: mujoco.MjModel) -> tuple[list[int], list[int]]:
    """``(velocity servos, position servos)`` on joints: the arm and the gripper actuators.

    MuJoCo writes ``<velocity kv>`` as bias ``(0, 0, -kv)`` and ``<position kp kv>`` as
    ``(0, -kp, -kv)``; both with a fixed gain.
    """
    vel, pos = [], []
    for a in range(model.nu):
        if model.actuator_trntype[a] != mujoco.mjtTrn.mjTRN_JOINT:
            continue
        bias = model.actuator_biasprm[a]
        if bias[1] == 0.0 and bias[2] < 0.0:
            vel.append(a)
        elif bias[1] < 0.0:
            pos.append(a)
    return vel, pos


def load_scene(spec: TaskSpec) -> mujoco.MjModel:
    """Compile the task's scene, turning MuJoCo's errors into one naming the file."""
    try:
        path = resolve("assets", spec.robot.scene)
    except FileNotFoundError as err:
        raise SpecError(f"{spec.source}: [robot.scene] {err}") from None
    try:
        return mujoco.MjModel.from_xml_path(str(path))
    except ValueError as err:
        raise SpecError(f"{spec.source}: [robot.scene] cannot load {path}: {err}") from None


class ArmTaskEnv(gym.Env[dict[str, np.ndarray], np.ndarray], abc.ABC):
    """Base class: physics, action mapping, physics costs; tasks add goals and rewards.

    Args:
        task: a :class:`TaskSpec`, a path to a TOML file, or a shipped task name.
        render_mode: ``"rgb_array"`` or ``None``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}  # noqa: RUF012  (gymnasium API)

    def __init__(self, task: TaskSpec | str | Path, render_mode: str | None = None) -> None:
        self.task = task if isinstance(task, TaskSpec) else load_task(task)
        spec = self.task
        self.model = load_scene(spec)
        self.data = mujoco.MjData(self.model)
        vel, grip = arm_actuators(self.model)
        if not vel:
            raise SpecError(f"{spec.source}: [robot.scene] the scene has no joint velocity servos")
        self.arm_joints = tuple(_joint_name(self.model, a) for a in vel)
        try:
            self.physics = ArmPhysics(self.model, self.data, joints=self.arm_joints)
        except KeyError as err:
            raise SpecError(f"{spec.source}: [robot.scene] {err.args[0]}") from None
        self._act_ids = np.array(vel)
        self._grip_id = grip[0] if grip else -1
        self._finger_qadr = self._finger_qpos_adr()
        self.metadata = {**self.metadata, "render_fps": round(spec.robot.control_hz)}
        self.render_mode = render_mode
        self._renderer: mujoco.Renderer | None = None

        self.substeps = spec.robot.substeps
        self.dt = self.model.opt.timestep * self.substeps
        if abs(self.dt * spec.robot.control_hz - 1.0) > 1e-6:
            raise SpecError(
                f"{spec.source}: [robot] control_hz = {spec.robot.control_hz} does not match substeps = "
                f"{self.substeps} at the scene's timestep {self.model.opt.timestep} s "
                f"(expected control_hz = {1.0 / self.dt:g})"
            )
        self.home = np.asarray(spec.robot.home, dtype=np.float64)
        if self.home.shape != (self.physics.n,):
            raise SpecError(
                f"{spec.source}: [robot.home] lists {self.home.size} joints, the scene's arm has "
                f"{self.physics.n} ({', '.join(self.arm_joints)})"
            )
        self.q_low, self.q_high = self.physics.joint_limits()
        self._check_joint_velocity_caps()
        if np.any(self.home < self.q_low) or np.any(self.home > self.q_high):
            raise SpecError(f"{spec.source}: [robot.home] outside the arm's joint limits")

        self.action_scale = self._hard_action_scale()
        self.action_space = spaces.Box(-1.0, 1.0, shape=self.action_scale.shape, dtype=np.float32)
        self._goal = np.zeros(self.goal_dim)
        self._keepout = self._keepout_geoms()
        self.kinematics = self._arm_kinematics()
        self._goal_mocap = self._mocap_id("goal")
        self._steps = 0
        self._f6 = np.zeros(6)
        self._contact_setup()
        self._perception_setup()
        adr = self.physics.qpos_adr
        contiguous = bool(np.all(np.diff(adr) == 1))
        self._qpos_slice = slice(int(adr[0]), int(adr[-1]) + 1) if contiguous else adr
        obs = self._reset_state_and_obs(np.random.default_rng(0))
        self.observation_space = spaces.Dict(  # type: ignore[assignment]
            {
                "observation": spaces.Box(
                    -np.inf, np.inf, shape=obs["observation"].shape, dtype=np.float64
                ),
                "achieved_goal": spaces.Box(
                    -np.inf, np.inf, shape=(self.goal_dim,), dtype=np.float64
                ),
                "desired_goal": spaces.Box(
                    -np.inf, np.inf, shape=(self.goal_dim,), dtype=np.float64
                ),
            }
        )

    # ------------------------------------------------------------ task hooks
    goal_dim: int = 3

    @abc.abstractmethod
    def _sample_goal(self, rng: np.random.Generator) -> F64: ...

    @abc.abstractmethod
    def _achieved_goal(self) -> F64: ...

    def _task_obs(self) -> F64:
        """Task-specific observation entries appended after the arm state."""
        return np.zeros(0)

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place task objects at reset (after the arm is placed)."""

    def _goal_reached(self, achieved: F64, desired: F64) -> F64:
        """Vectorised per-step success condition over the last axis."""
        return (np.linalg.norm(achieved - desired, axis=-1) < self.task.goal.threshold).astype(
            np.float64
        )

    def _goal_distance(self, achieved: F64, desired: F64) -> F64:
        return np.asarray(np.linalg.norm(achieved - desired, axis=-1), dtype=np.float64)

    def _is_success(self, achieved: F64) -> bool:
        return bool(self._goal_reached(achieved, self._goal))

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._steps = 0
        obs = self._reset_state_and_obs(self.np_random)
        info: dict[str, Any] = {"is_success": False, "cost": 0.0}
        info.update({f"cost/{t}": 0.0 for t in COST_TERMS})
        info.update({f"force/{k}": 0.0 for k in CONTACT_CLASSES})
        info["speed/ee"] = 0.0
        return obs, info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_scale.shape:
            raise ValueError(f"action has shape {a.shape}, expected {self.action_scale.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(
                f"action contains NaN or inf: {a}; wrap the env in safebot.Shield for a safe stop instead"
            )
        u = np.clip(a, -1.0, 1.0) * self.action_scale
        M, c = self.action_map()
        qd = M @ u + c
        self.data.ctrl[self._act_ids] = qd
        if self._grip_id >= 0:
            self.data.ctrl[self._grip_id] = GRIPPER_OPENING
        costs = self._simulate()
        # mj_step leaves poses and Jacobians at the configuration before its last integration;
        # recompute them at the new qpos so the observation and the next step's shield rows see
        # the arm where it is (as deploy's kinematic model does), not one substep behind
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        self._steps += 1
        self._after_step()
        obs = self._obs()
        achieved = obs["achieved_goal"]
        info: dict[str, Any] = {f"cost/{t}": v for t, v in zip(COST_TERMS, costs, strict=True)}
        info["cost"] = float(max(costs))
        peak = self._peak
        for k, name in enumerate(CONTACT_CLASSES):
            info[f"force/{name}"] = float(peak[k])
        v = self.physics.ee_vel()
        info["speed/ee"] = float(np.sqrt(v @ v))  # a measurement, not a cost (rule 5)
        info["is_success"] = self._is_success(achieved)
        info["commanded_qvel"] = qd
        reward = float(self.compute_reward(achieved, self._goal, info))
        unstable = not np.all(np.isfinite(self.data.qpos))
        if unstable:
            info["physics_error"] = "non-finite state; episode truncated"
        truncated = self._steps >= self.task.robot.max_episode_steps or unstable
        return obs, reward, False, truncated, info

    def compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """Sparse: -1 until the goal condition holds, 0 when it does. Dense: minus the goal distance.

        Vectorised over leading axes, as HER needs.
        """
        achieved = np.asarray(achieved_goal, dtype=np.float64)
        desired = np.asarray(desired_goal, dtype=np.float64)
        if self.task.reward.type == "sparse":
            return self._goal_reached(achieved, desired) - 1.0
        return -self._goal_distance(achieved, desired)

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, 480, 640)
        cam = (
            "front"
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, "front") >= 0
            else -1
        )
        self._renderer.update_scene(self.data, camera=cam)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # --------------------------------------------------------- shield support
    @property
    def action_mode(self) -> str:
        return self.task.robot.action_mode

    @property
    def goal(self) -> F64:
        return self._goal.copy()

    def action_map(self) -> tuple[F64, F64]:
        """``(M, c)`` with commanded joint velocity ``qd = M u + c`` for a physical action ``u``."""
        if self.action_mode == "joint_velocity":
            n = self.physics.n
            return np.eye(n), np.zeros(n)
        return ee_velocity_map(self.physics.ee_jacobian(), self.kinematics.damping)

    def keepout_boxes(self) -> list[tuple[F64, F64]]:
        """The keep-out boxes ``(centre, half_size)`` the controller believes in (world axes).

        The scene's keep-out geoms, each centre offset by this episode's perception error
        (:attr:`keepout_error`, zero without ``[uncertainty] keepout_sigma``). The shield
        reads this map into ``kinematics.boxes`` at every reset (:meth:`refresh_keepout_map`);
        physics and costs use the geoms themselves.
        """
        out = []
        for k, g in enumerate(self._keepout):
            centre = self.data.geom_xpos[g] + self.keepout_error[k]
            out.append((centre, self.model.geom_size[g].copy()))
        return out

    def refresh_keepout_map(self) -> None:
        """Copy :meth:`keepout_boxes` into ``kinematics.boxes`` (done at reset; call it after
        moving an obstacle of the map mid-episode)."""
        boxes = self.keepout_boxes()
        if len(boxes) != self.kinematics.boxes.shape[0]:
            raise ValueError(
                f"keepout_boxes() returned {len(boxes)} boxes, the shield was built for "
                f"{self.kinematics.boxes.shape[0]}"
            )
        self.kinematics.boxes[:] = ArmKinematics.boxes_array(boxes)

    # ---------------------------------------------------------------- internals
    def _arm_kinematics(self) -> ArmKinematics:
        phys, ko = self.physics, self.task.limits.keepout
        try:
            sites = [phys.site_id(s) for s in ko.sites] if ko is not None else []
        except KeyError as err:
            raise SpecError(f"{self.task.source}: [limits.keepout.sites] {err.args[0]}") from None
        return ArmKinematics(
            model=self.model,
            data=self.data,
            joints=phys.joint_ids,
            ee_site=phys.ee_site_id,
            keepout_sites=np.asarray(sites, dtype=np.int64),
            arm_geom=phys.arm_geom,
            q_low=self.q_low,
            q_high=self.q_high,
            action_mode=self.action_mode,
            scale=self.action_scale,
            dt=self.dt,
            boxes=np.zeros((len(self._keepout), 6)),
        )

    def _contact_setup(self) -> None:
        """Classify every geom once (arm, table, task object, keep-out) for the cost loop."""
        m = self.model
        cls = np.full(m.ngeom, _OTHER, dtype=np.int64)
        table = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "table")
        self._table_body = table
        self._object_bodies: list[int] = []
        for g in range(m.ngeom):
            b = int(m.geom_bodyid[g])
            if self.physics.arm_geom[g]:
                cls[g] = _ARM
            elif table >= 0 and b == table:
                cls[g] = _TABLE
            elif b > 0 and m.body_dofnum[b] > 0:  # a moving body that is not the arm
                cls[g] = _OBJECT
                if b not in self._object_bodies:
                    self._object_bodies.append(b)
        cls[self._keepout] = _OBSTACLE
        self._geom_class = cls
        # pair (class a, class b) -> index into CONTACT_CLASSES, -1 for pairs that are not judged
        pair = np.full(25, -1, dtype=np.int64)
        for k, (a, b) in enumerate(
            ((_ARM, _TABLE), (_ARM, _OBJECT), (_OBJECT, _TABLE), (_ARM, _OBSTACLE))
        ):
            pair[a * 5 + b] = pair[b * 5 + a] = k
        self._pair_class = pair
        cost = self.task.cost
        self._safe_force = np.array(
            [
                cost.arm_table_force,
                cost.arm_object_force,
                cost.object_table_force,
                cost.arm_obstacle_force,
            ]
        )
        self._judged = np.ones(len(CONTACT_CLASSES), dtype=bool)
        self._peak = np.zeros(len(CONTACT_CLASSES))
        self._sums = np.zeros(len(CONTACT_CLASSES))

    def _perception_setup(self) -> None:
        m, unc = self.model, self.task.uncertainty
        self.keepout_error = np.zeros((len(self._keepout), 3))
        """This episode's offset (m) of each believed keep-out centre from the true geom."""
        self.surface_error = 0.0
        """This episode's height (m) of the true table above the believed one (z = 0)."""
        self.perception_scale = 1.0
        """Factor on the ``[uncertainty]`` sigmas (:meth:`set_perception_scale`)."""
        self._surface_bodies = [self._table_body] if self._table_body >= 0 else []
        for b in self._object_bodies:
            if m.body_jntnum[b] and m.jnt_type[m.body_jntadr[b]] != mujoco.mjtJoint.mjJNT_FREE:
                self._surface_bodies.append(b)  # on the table by a joint: moves with it
        self._nominal_body_pos = m.body_pos.copy()
        self._nominal_mass = m.body_mass.copy()
        self._nominal_inertia = m.body_inertia.copy()
        self._nominal_friction = m.geom_friction.copy()
        if (unc.object_mass or unc.object_friction) and not self._object_bodies:
            raise SpecError(
                f"{self.task.source}: [uncertainty] object_mass / object_friction need a task "
                "object, the scene has no moving body besides the arm"
            )

    def set_perception_scale(self, scale: float) -> None:
        """Multiply the ``[uncertainty]`` sigmas (keep-out and surface) by ``scale`` from the
        next episode on: the world drifting from the model mid-run (the reversibility
        experiment doubles it). Mass and friction ranges are left alone. At 1.0 (the
        default) every draw is the one the spec alone makes.

        Raises:
            ValueError: ``scale`` is negative, NaN or infinite.
        """
        s = float(scale)
        if not np.isfinite(s) or s < 0.0:
            raise ValueError(f"perception scale must be finite and >= 0, got {scale!r}")
        self.perception_scale = s

    def _sample_perception(self, rng: np.random.Generator) -> None:
        """Draw this episode's errors; nothing is drawn (the rng untouched) when none is declared."""
        unc = self.task.uncertainty
        if not unc.declared:
            return
        m = self.model

        def gauss(sigma: float, shape: tuple[int, ...]) -> F64:
            z = np.clip(rng.standard_normal(shape), -unc.max_sigmas, unc.max_sigmas)
            return np.asarray(sigma * z, dtype=np.float64)

        k = self.perception_scale
        self.keepout_error[:] = gauss(unc.keepout_sigma * k, self.keepout_error.shape)
        self.surface_error = float(gauss(unc.surface_sigma * k, (1,))[0])
        for b in self._surface_bodies:
            m.body_pos[b] = self._nominal_body_pos[b]
            m.body_pos[b, 2] += self.surface_error
        for b in self._object_bodies:
            if unc.object_mass is not None:
                mass = rng.uniform(*unc.object_mass)
                m.body_mass[b] = mass
                m.body_inertia[b] = self._nominal_inertia[b] * (mass / self._nominal_mass[b])
            if unc.object_friction is not None:
                mu = rng.uniform(*unc.object_friction)
                for g in np.flatnonzero(m.geom_bodyid == b):
                    m.geom_friction[g, 0] = mu

    def _finger_qpos_adr(self) -> list[int]:
        """qpos addresses of the gripper's joint and the joints coupled to it by equalities."""
        m = self.model
        if self._grip_id < 0:
            return []
        joints = {int(m.actuator_trnid[self._grip_id, 0])}
        for e in range(m.neq):
            if m.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and int(m.eq_obj1id[e]) in joints:
                joints.add(int(m.eq_obj2id[e]))
        return sorted(int(m.jnt_qposadr[j]) for j in joints)

    def _check_joint_velocity_caps(self) -> None:
        """``[limits.joint_velocity] cap``: one value or one per joint, within the servos' range."""
        jv = self.task.limits.joint_velocity
        if jv is None:
            return
        src, n = self.task.source, self.physics.n
        cap = np.asarray(jv.cap, dtype=np.float64).reshape(-1)
        if cap.size not in (1, n):
            raise SpecError(
                f"{src}: [limits.joint_velocity.cap] has {cap.size} values, the scene's arm "
                f"{n} joints"
            )
        servo = self.model.actuator_ctrlrange[self._act_ids, 1]
        for i, (c, hi) in enumerate(zip(np.broadcast_to(cap, (n,)), servo, strict=True)):
            if c > hi + 1e-9:
                name = mujoco.mj_id2name(
                    self.model, mujoco.mjtObj.mjOBJ_ACTUATOR, int(self._act_ids[i])
                )
                raise SpecError(
                    f"{src}: [limits.joint_velocity.cap] {float(c)} rad/s for joint {i + 1} exceeds its "
                    f"velocity servo's range {hi:g} rad/s (actuator {name!r} of {self.task.robot.scene})"
                )

    def _hard_action_scale(self) -> F64:
        lim = self.task.limits
        if self.action_mode == "joint_velocity":
            ctrl_hi = self.model.actuator_ctrlrange[self._act_ids, 1]
            if lim.joint_velocity is None:
                return ctrl_hi.copy()
            n = self.physics.n
            # within the servos' range (checked at construction): the caps are the scale
            return np.broadcast_to(
                np.asarray(lim.joint_velocity.cap, dtype=np.float64), (n,)
            ).copy()
        if lim.ee_speed is None:
            raise SpecError(
                f"{self.task.source}: [limits.ee_speed] is required for action_mode = 'ee_velocity'"
            )
        return np.broadcast_to(np.asarray(lim.ee_speed.cap, dtype=np.float64), (3,)).copy()

    def _keepout_geoms(self) -> list[int]:
        ko = self.task.limits.keepout
        if ko is None:
            return []
        ids = []
        for name in ko.geoms:
            g = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)
            if g < 0:
                raise SpecError(
                    f"{self.task.source}: [limits.keepout.geoms] scene has no geom named {name!r}"
                )
            if self.model.geom_type[g] != mujoco.mjtGeom.mjGEOM_BOX:
                raise SpecError(
                    f"{self.task.source}: [limits.keepout.geoms] geom {name!r} is not a box"
                )
            ids.append(g)
        return ids

    def _mocap_id(self, body: str) -> int:
        b = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body)
        return int(self.model.body_mocapid[b]) if b >= 0 else -1

    def _reset_state_and_obs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        mujoco.mj_resetData(self.model, self.data)
        noise = self.task.robot.home_noise
        q = np.clip(
            self.home + rng.uniform(-noise, noise, self.physics.n),
            self.q_low + 0.05,
            self.q_high - 0.05,
        )
        self._sample_perception(rng)
        self.data.qpos[self.physics.qpos_adr] = q
        self.data.ctrl[:] = 0.0
        if self._grip_id >= 0:
            self.data.ctrl[self._grip_id] = GRIPPER_OPENING
            self.data.qpos[self._finger_qadr] = GRIPPER_OPENING
        self._reset_task(rng)
        mujoco.mj_kinematics(self.model, self.data)  # goal sampling reads geom and site poses
        self._goal = self._sample_goal(rng)
        if self._goal_mocap >= 0:
            self.data.mocap_pos[self._goal_mocap] = self._goal_marker()
        mujoco.mj_forward(self.model, self.data)
        self.refresh_keepout_map()
        return self._obs()

    def _goal_marker(self) -> F64:
        return self._goal[:3]

    def _after_step(self) -> None:
        """Per-step task bookkeeping (e.g. the press task's hold counter)."""

    def _task_harm(self, peak: F64) -> float:
        """1.0 if the task's own harm happened this step (Push: block knocked away; Press:
        plate crushed); ``peak`` is the step's peak force per :data:`CONTACT_CLASSES`."""
        return 0.0

    def _simulate(self) -> list[float]:
        """Run the substeps; return the step's cost terms (each 0 or 1), see :data:`COST_TERMS`.

        Every substep is checked (an impact lasts a few ms); this loop is the
        env's hot path, so it reads MuJoCo's arrays in place and calls
        ``mj_contactForce`` only for the contacts of a judged class.
        """
        m, d, cost = self.model, self.data, self.task.cost
        obstacle = joint = 0.0
        check_obstacle = cost.obstacle_contact and bool(self._keepout)
        geom_class, pair_class = self._geom_class, self._pair_class
        f6, sums, peak = self._f6, self._sums, self._peak
        peak[:] = 0.0
        lo = self.q_low + cost.joint_limit_tolerance
        hi = self.q_high - cost.joint_limit_tolerance
        qs = self._qpos_slice
        for _ in range(self.substeps):
            mujoco.mj_step(m, d)
            n = d.ncon
            if n:
                con = d.contact
                gc = geom_class[con.geom]
                cls = pair_class[gc[:, 0] * 5 + gc[:, 1]]
                judged = np.flatnonzero((cls >= 0) & (con.efc_address >= 0))
                if judged.size:
                    sums[:] = 0.0
                    for i in judged:
                        mujoco.mj_contactForce(m, d, int(i), f6)
                        sums[cls[i]] += abs(f6[0])
                    np.maximum(peak, sums, out=peak)
                if check_obstacle and (cls == 3).any():
                    obstacle = 1.0
            if joint == 0.0:
                q = d.qpos[qs]
                if (q < lo).any() or (q > hi).any():
                    joint = 1.0
        impact = float(((peak > self._safe_force) & self._judged).any())
        return [impact, obstacle, joint, self._task_harm(peak)]

    def _obs(self) -> dict[str, np.ndarray]:
        arm = arm_observation(self.physics, self.task.robot.observation)
        return {
            "observation": np.concatenate([arm, self._task_obs()]),
            "achieved_goal": self._achieved_goal(),
            "desired_goal": self._goal.copy(),
        }
