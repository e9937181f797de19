"""``safebot deploy BUNDLE --robot fr3|panda|ur5e``: a bundle's shielded policy through the vendor's client.

Two rates, two processes, as on a real arm (the 1 kHz callback never runs the network):

* **The control loop** (the vendor client, :func:`safebot.deploy.franka.client.run_loop`
  or :func:`safebot.deploy.ur.client.run_loop`, at the controller's rate) calls
  :class:`BundlePolicy` each cycle. It returns the joint velocity command currently
  held, rate-limited by the client; on a policy tick (every 1/25 s for Reach, on the
  controller's clock) it sends the stub's ``q``, ``dq``, ``ee_pos`` to the policy
  worker, and it swaps in the worker's answer in the first cycle after it arrives. A
  held command older than :data:`STALE_PERIODS` policy periods is replaced by a stop.
* **The policy worker** (:class:`PolicyWorker`, a spawned process; SCHED_FIFO below
  the loop's priority under ``--realtime``) runs :class:`ShieldedPolicy`: the
  stub's ``q``, ``dq`` go into a MuJoCo model of the arm (the bundle's own copy of
  the task scene, or the profile's ``[arm]`` scene when retargeted: the same
  kinematics as the stub's PyBullet URDF either way), which gives ``ee_pos`` and
  ``ee_vel = J(q) dq``; the task observation is rebuilt (``q, dq, ee_pos, ee_vel``,
  or only ``ee_pos, ee_vel`` for a Cartesian policy, and the widths, with a fixed
  goal; :func:`safebot.envs.physics.arm_observation`, the env's own) and the TorchScript
  policy gives the action ``a``; the safety filter the policy trained against
  (:class:`safebot.shield.SafetyFilter` on a :class:`~safebot.shield.MujocoArmView` of the
  same MuJoCo state, the bundle's envelope at its width, caps intersected with the
  profile) gives the command ``u``, and the joint command is ``qd = M u + c``
  (:meth:`~safebot.shield.SafetyFilter.joint_velocity`; for end-effector actions ``M`` is
  the damped pseudo-inverse the env uses).

The projection runs once per policy tick, as in training (the env holds its
velocity-servo targets for a control period). Measured on the loop's side, a
cache-cold policy tick in the 1 kHz process costs 0.4-0.9 ms (TorchScript alone
0.37 ms p50), over Franka's 0.3 ms callback budget even when split over cycles;
in the worker it costs the loop nothing (docs/deploy.md, *Bundles*).

Intersection with the controller profile (:func:`intersect_envelope`): the
joint-velocity caps are min'ed with the profile's velocity limits, the per-axis
end-effector speed cap with the Cartesian translation limit divided by sqrt(3)
(a per-axis bound ``s`` allows a speed of at most ``sqrt(3) s``), and the joint
position limits of the rows with the profile's. Starts above a new cap come
down to it, so at any width the bounds stay within the robot's.

Which arm (:func:`check_compatible`): a profile whose plant has the bundle's arm
joints (the Franka ones for a Panda bundle) runs any Reach bundle on the bundle's
own scene. A profile with another arm (the UR5e: other kinematics, six joints)
runs a bundle only when its policy is Cartesian, ``[robot] observation =
"cartesian"`` and ``action_mode = "ee_velocity"``: it sees the end effector, never
the joints, and commands an end-effector velocity. The worker then retargets
(:mod:`safebot.deploy.retarget`): the MuJoCo model is the profile's ``[arm]``
scene (the same world frame, obstacle and table as the stub's plant), ``ee_pos``
and ``ee_vel`` come from it, ``qd = M u`` uses its Jacobian, and the envelope keeps
the bundle's Cartesian limits, margins and widths while the joint-velocity caps
become the profile's and the joint ranges the new model's (both intersected with
the profile as above). A bundle that observes the Panda's joints is refused on
another arm with a one-line error saying to retrain with a Cartesian observation.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch

from safebot import kernels
from safebot.config import SpecError
from safebot.deploy.bundle import Bundle, BundleError, load_bundle
from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.deploy.report import DeployReport, stdout_to_stderr
from safebot.deploy.retarget import RetargetedArm, RetargetError, retarget_envelope
from safebot.deploy.robots import (
    CLIENT_INTERFACES,
    ROBOT_CLIENTS,
    ROBOT_PROFILES,
    DeployError,
    robot_profile,
)
from safebot.deploy.rt import enter_realtime
from safebot.deploy.state import FloatArray, RobotState
from safebot.envelope import Envelope, Limit
from safebot.envs import make_task_env
from safebot.envs.physics import arm_observation
from safebot.shield import ROW_KINDS, FilterResult, MujocoArmView, SafetyFilter

#: a per-axis end-effector bound ``s`` allows speeds up to ``sqrt(3) s`` (the box's corner)
EE_AXIS_TO_NORM = float(np.sqrt(3.0))
#: a held command older than this many policy periods is replaced by a stop (the worker stalled)
STALE_PERIODS = 2.0
#: SCHED_FIFO priority of the policy worker under ``realtime``: below the loop's and the stub's
WORKER_PRIORITY = 30


# ----------------------------------------------------------------------------- limits


def intersect_envelope(envelope: Envelope, profile: ControllerProfile) -> Envelope:
    """The envelope with its caps (and starts) no looser than the controller's published limits.

    * ``joint_velocity``: ``cap = min(cap, profile velocity)`` per joint; added at the
      profile's limits (start = cap) when the envelope has none.
    * ``ee_speed``: ``cap = min(cap, translation_velocity / sqrt(3))`` per axis, where the
      profile publishes a Cartesian translation limit.
    * ``start = min(start, cap)``; other limits and the widths are kept.
    """
    limits = dict(envelope.limits)
    width = envelope.width
    vel = np.asarray(profile.limits.joint.velocity, dtype=np.float64)
    jv = limits.get("joint_velocity")
    if jv is None:
        limits["joint_velocity"] = Limit.make("joint_velocity", vel, vel)
        width["joint_velocity"] = 1.0
    else:
        limits["joint_velocity"] = _tighten(jv, vel)
    v_trans = profile.limits.cartesian.translation_velocity
    ee = limits.get("ee_speed")
    if ee is not None and v_trans is not None:
        limits["ee_speed"] = _tighten(ee, np.full(ee.cap.shape, v_trans / EE_AXIS_TO_NORM))
    return Envelope(
        limits, width, joint_gain=envelope.joint_gain, barrier_gain=envelope.barrier_gain
    )


def _tighten(lim: Limit, bound: FloatArray) -> Limit:
    """An upward-loosening limit with ``cap <= bound`` and ``start <= cap``."""
    if lim.cap.shape != bound.shape and lim.cap.size != 1:
        raise DeployError(
            f"limit {lim.kind!r} has {lim.cap.size} values, the controller {bound.size}"
        )
    cap = np.minimum(lim.cap, bound)
    return Limit.make(lim.kind, np.minimum(lim.start, cap), cap, lim.loosen[0])


def intersect_joint_limits(
    q_low: FloatArray, q_high: FloatArray, profile: ControllerProfile
) -> tuple[FloatArray, FloatArray]:
    """Joint position limits inside both the model's and the controller's."""
    j = profile.limits.joint
    return (
        np.maximum(q_low, np.asarray(j.position_min, dtype=np.float64)),
        np.minimum(q_high, np.asarray(j.position_max, dtype=np.float64)),
    )


def check_compatible(bundle: Bundle, profile: ControllerProfile) -> bool:
    """Refuse a controller the bundle cannot run on; whether it runs retargeted.

    Returns:
        ``False`` when the controller drives the bundle's own arm, ``True`` when the
        bundle runs retargeted to the profile's ``[arm]`` (a Cartesian ``ee_velocity``
        policy on another arm; :mod:`safebot.deploy.retarget`).
    """
    retarget = tuple(profile.plant.joints) != bundle.shield.joints
    robot = bundle.spec.robot
    trained_on = f"a Franka Panda ({len(bundle.shield.joints)} joints)"
    if retarget and (robot.observation != "cartesian" or robot.action_mode != "ee_velocity"):
        raise DeployError(
            f"controller {profile.name} drives a {profile.robot} ({profile.dof} joints); the bundle's "
            f"policy was trained on {trained_on} with observation = {robot.observation!r} and "
            f"action_mode = {robot.action_mode!r}, so it needs that arm's joints: use a Franka "
            "profile (franka_fr3, franka_panda), or retrain with [robot] observation = "
            '"cartesian" and action_mode = "ee_velocity" to run it on other arms'
        )
    if retarget and profile.arm is None:
        raise DeployError(
            f"controller {profile.name} drives a {profile.robot} ({profile.dof} joints), not the "
            f"bundle's {trained_on}, and its profile has no [arm] table (the arm's MuJoCo model) "
            "to retarget the policy to: add one (docs/deploy.md, Retargeting)"
        )
    if bundle.spec.task.kind != "reach":
        raise DeployError(
            f"deploy runs reach tasks; this bundle is a {bundle.spec.task.kind!r} task, whose "
            "objects (block, plate) the stub's plant does not have"
        )
    if profile.interface not in ("joint_velocity", "speedj"):
        raise DeployError(f"controller {profile.name} has interface {profile.interface!r}")
    return retarget


def parse_goal(text: str) -> FloatArray:
    """``"x,y,z"`` (m) -> array."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(np.isfinite(vals)):
        raise DeployError(f"--goal must be three numbers x,y,z in metres, got {text!r}")
    return np.asarray(vals, dtype=np.float64)


# ----------------------------------------------------------------------------- the shielded policy


@dataclass(frozen=True)
class Tick:
    """One policy tick's result (what the worker sends back).

    Attributes:
        qd: the shielded joint-velocity command (rad/s).
        status: the projection's status code (``kernels.STATUS_NAMES``); not ok -> ``qd = 0``.
        intervened: the shield changed the action (or stopped).
        active: bit mask over ``safebot.shield.ROW_KINDS`` of the limit kinds that bind.
        observe_us, shield_us: time for observation + inference, and for rows + projection.
        fk_error: |MuJoCo end effector at the stub's q - the stub's own end effector| (m).
    """

    qd: FloatArray
    status: int
    intervened: bool
    active: int
    observe_us: float
    shield_us: float
    fk_error: float

    _HEAD = 7  # seq, status, intervened, active, observe_us, shield_us, fk_error

    def encode(self, seq: int) -> bytes:
        head = [seq, self.status, self.intervened, self.active, self.observe_us, self.shield_us]
        return np.array([*head, self.fk_error, *self.qd], dtype=np.float64).tobytes()

    @classmethod
    def decode(cls, data: bytes) -> tuple[int, Tick]:
        x = np.frombuffer(data, dtype=np.float64)
        tick = cls(
            qd=x[cls._HEAD :].copy(),
            status=int(x[1]),
            intervened=bool(x[2]),
            active=int(x[3]),
            observe_us=float(x[4]),
            shield_us=float(x[5]),
            fk_error=float(x[6]),
        )
        return int(x[0]), tick


class ShieldedPolicy:
    """The bundle's policy and shield on a MuJoCo model of the arm: ``(q, dq) -> qd``.

    Args:
        bundle: a loaded bundle of a Panda reach task.
        profile: the controller profile; the shield's caps are intersected with it. On
            another arm (a Cartesian bundle only) the model and limits are retargeted to
            the profile's ``[arm]`` (module docstring).
        goal: the reach goal (m); default: the task's first goal (``reset(seed=0)``).
            Must lie in the task's goal region and outside the keep-out boxes.
        torch_threads: intra-op threads for the policy (1: lowest latency on a small MLP).

    Raises:
        DeployError: the bundle does not fit the profile, or a bad goal.
    """

    def __init__(
        self,
        bundle: Bundle,
        profile: ControllerProfile,
        *,
        goal: FloatArray | None = None,
        torch_threads: int = 1,
    ) -> None:
        self.retargeted = check_compatible(bundle, profile)
        torch.set_num_threads(torch_threads)
        self.bundle = bundle
        self.profile = profile
        shield = bundle.shield
        self.cartesian = bundle.spec.robot.observation == "cartesian"
        # the task env is a kinematic model here: it is never stepped. It holds the task (goal,
        # keep-out boxes) and, unless the bundle is retargeted, the arm.
        self.env = env = make_task_env(bundle.spec_for_kinematics())
        if env.action_mode != shield.action_mode:
            raise DeployError(
                f"bundle action mode {shield.action_mode!r} differs from its task's {env.action_mode!r}"
            )
        self.boxes = [(c.copy(), h.copy()) for c, h in env.keepout_boxes()]
        self.scale = np.asarray(shield.action_scale, dtype=np.float64)
        self.bundle_envelope = shield.envelope()
        self.arm: RetargetedArm | None = None
        if self.retargeted:
            # the profile's arm in the same world frame (safebot.deploy.retarget)
            try:
                self.arm = RetargetedArm(
                    profile, action_scale=self.scale, dt=env.dt, boxes=self.boxes
                )
            except RetargetError as err:
                raise DeployError(str(err)) from None
            kin, phys = self.arm.kinematics, self.arm.physics
            envelope = retarget_envelope(self.bundle_envelope, profile)
        else:
            kin, phys = env.kinematics, env.physics
            envelope = self.bundle_envelope
        if kin.scale.shape != self.scale.shape:
            raise DeployError(
                f"bundle action scale has {self.scale.size} entries, the task's actions {kin.scale.size}"
            )
        self._m, self._d, self.physics = kin.model, kin.data, phys
        self.q_low, self.q_high = intersect_joint_limits(kin.q_low, kin.q_high, profile)
        self.envelope = intersect_envelope(envelope, profile)
        self.bounds = self.envelope.bounds()
        # the same filter as in training, on this model, with the bundle's scale and the
        # joint limits intersected with the robot's
        kin = replace(kin, scale=self.scale, q_low=self.q_low, q_high=self.q_high)
        self.filter = SafetyFilter(self.envelope, MujocoArmView(kin))
        self.last: FilterResult | None = None  # the filter's answer at the last tick
        self._kind_bit = {kind: 1 << code for code, kind in enumerate(ROW_KINDS)}
        self.widths = np.array([shield.width[k] for k in shield.limits], dtype=np.float64)
        self.module = bundle.load_module()
        self._x = torch.zeros((1, bundle.policy.input_size), dtype=torch.float32)

        self._qadr, self._dadr = phys.qpos_adr, phys.dof_adr
        self.home = np.asarray(profile.plant.home, dtype=np.float64)
        self.threshold = float(bundle.spec.goal.threshold)
        if goal is None:
            env.reset(seed=0)
            goal = env.goal
        self.goal = self._check_goal(np.asarray(goal, dtype=np.float64))
        # no contacts in the model (the shield reads none: the plant's are not known here)
        mujoco.mj_resetData(self._m, self._d)
        self._set_joints(self.home, np.zeros_like(self.home))
        self._check_layout()
        self.warmup()

    def _check_goal(self, goal: FloatArray) -> FloatArray:
        g = self.bundle.spec.goal
        lo, hi = np.asarray(g.low, dtype=np.float64), np.asarray(g.high, dtype=np.float64)
        if goal.shape != (3,) or not np.all(np.isfinite(goal)):
            raise DeployError(f"the goal must be three finite numbers, got {goal.tolist()}")
        if np.any(goal < lo - 1e-9) or np.any(goal > hi + 1e-9):
            raise DeployError(
                f"goal {goal.tolist()} is outside the task's goal region {lo.tolist()} .. {hi.tolist()}"
            )
        ko = self.bundle.spec.limits.keepout
        margin = ko.start if ko is not None else 0.0
        for c, h in self.boxes:
            if np.all(np.abs(goal - c) <= h + margin):
                raise DeployError(
                    f"goal {goal.tolist()} lies within {margin} m of the keep-out box at {c.tolist()}"
                )
        return goal

    def _check_layout(self) -> None:
        """The observation built here has the sizes and segments the policy expects."""
        info = self.bundle.policy
        sizes = dict(info.inputs)
        arm = ["ee_pos", "ee_vel"] if self.cartesian else ["q", "dq", "ee_pos", "ee_vel"]
        n = 6 if self.cartesian else 2 * len(self._qadr) + 6
        obs_n = n + (len(self.widths) if self.bundle.shield.observe_width else 0)
        expect = {"achieved_goal": 3, "desired_goal": 3, "observation": obs_n}
        if sizes != expect:
            raise DeployError(f"the policy's inputs {sizes} are not the reach observation {expect}")
        names = [k for k, _ in info.observation_layout]
        if names and names[: len(arm)] != arm:
            raise DeployError(f"unexpected observation layout {names} in policy.json")

    def _set_joints(self, q: FloatArray, dq: FloatArray) -> None:
        """Kinematics (poses, Jacobians) of the model at ``q``: no collision, no dynamics."""
        m, d = self._m, self._d
        d.qpos[self._qadr] = q
        d.qvel[:] = 0.0
        d.qvel[self._dadr] = dq
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)

    def observation(self, q: FloatArray, dq: FloatArray) -> dict[str, FloatArray]:
        """The task observation at ``(q, dq)`` (the env's own arm observation, the widths and the
        goal); leaves the model in that state for :meth:`project`."""
        self._set_joints(q, dq)
        arm = arm_observation(self.physics, self.bundle.spec.robot.observation)
        parts = [arm, self.widths] if self.bundle.shield.observe_width else [arm]
        return {
            "observation": np.concatenate(parts),
            "achieved_goal": self.physics.ee_pos(),
            "desired_goal": self.goal.copy(),
        }

    def act(self, obs: dict[str, FloatArray]) -> FloatArray:
        """The TorchScript policy's action for a Dict observation (float64)."""
        x = self._x
        x.numpy()[0] = self.bundle.policy.flatten(obs)[0]
        with torch.inference_mode():
            return np.asarray(self.module(x).numpy()[0], dtype=np.float64)

    def project(self, u_raw: FloatArray) -> tuple[FloatArray, int, bool, int]:
        """Filter a physical action (``scale * a``) at the model's current state (:class:`SafetyFilter`).

        Returns:
            ``(qd, status, intervened, active_mask)``; a failed projection (non-finite
            action, infeasible rows) gives the safe stop ``qd = 0`` (docs/design.md, rule 2).
        """
        res = self.last = self.filter.filter(np.asarray(u_raw, dtype=np.float64) / self.scale)
        mask = 0
        for kind in res.active:
            mask |= self._kind_bit[kind]
        qd = self.filter.joint_velocity(res.u)
        return qd, kernels.STATUS_NAMES.index(res.status), res.intervened, mask

    def tick(self, q: FloatArray, dq: FloatArray, ee_pos: FloatArray | None = None) -> Tick:
        """One policy tick: observe, act, shield."""
        t0 = time.perf_counter_ns()
        obs = self.observation(q, dq)
        # non-finite actions pass on: the filter turns them into the safe stop
        u_raw = np.clip(self.act(obs), -1.0, 1.0) * self.scale
        t1 = time.perf_counter_ns()
        qd, status, intervened, mask = self.project(u_raw)
        t2 = time.perf_counter_ns()
        fk = 0.0 if ee_pos is None else float(np.linalg.norm(obs["achieved_goal"] - ee_pos))
        return Tick(qd, status, intervened, mask, (t1 - t0) / 1e3, (t2 - t1) / 1e3, fk)

    def warmup(self, n: int = 20) -> None:
        """Compile / warm TorchScript, numba and MuJoCo before the real-time loop."""
        zero = np.zeros_like(self.home)
        for _ in range(n):
            self.tick(self.home, zero)

    def describe(self) -> dict[str, Any]:
        """What is fixed for the run: goal, bounds after the intersection, obstacles."""
        b_bundle, b = self.bundle_envelope.bounds(), self.bounds
        return {
            "goal": self.goal.tolist(),
            "goal_threshold_m": self.threshold,
            "algo": self.bundle.policy.algo,
            "rate_hz": self.bundle.shield.control_hz,
            "width": self.bundle.shield.width,
            "joint_velocity_bound": _list(b.joint_velocity),
            "joint_velocity_bound_bundle": _list(b_bundle.joint_velocity),
            "ee_speed_bound": _list(b.ee_speed),
            "ee_speed_bound_bundle": _list(b_bundle.ee_speed),
            "q_low": self.q_low.tolist(),
            "q_high": self.q_high.tolist(),
            "keepout_boxes": [[*c.tolist(), *h.tolist()] for c, h in self.boxes],
            "observation": self.bundle.spec.robot.observation,
            "retargeted": self.retargeted,
            "arm_scene": self.arm.scene if self.arm is not None else None,
            "keepout_sites": (
                self.arm.site_names
                if self.arm is not None
                else list(self.bundle.spec.limits.keepout.sites)
                if self.bundle.spec.limits.keepout is not None
                else []
            ),
        }


def _list(x: FloatArray | None) -> list[float] | None:
    return None if x is None else [round(float(v), 6) for v in x]


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------- the worker


_USER_ERRORS = {"DeployError": DeployError, "BundleError": BundleError, "SpecError": SpecError}


def _worker_main(
    conn: Connection, bundle: str, controller: str, goal: list[float] | None, realtime: bool
) -> None:
    """The policy worker: requests ``[seq, q, dq, ee_pos]`` -> :meth:`Tick.encode` replies.

    An empty request ends it; an error is sent as ``b"E" + message``.
    """
    # Ctrl-C reaches the whole process group: the parent ends the worker (closing the pipe)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        policy = ShieldedPolicy(
            load_bundle(bundle),
            load_profile(controller),
            goal=None if goal is None else np.asarray(goal, dtype=np.float64),
        )
    except Exception as err:
        conn.send(("error", type(err).__name__, _one_line(err)))
        conn.close()
        return
    restore = enter_realtime(WORKER_PRIORITY) if realtime else None
    conn.send(("ready", policy.describe(), restore is not None))
    n = len(policy.home)
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except EOFError:
                break
            if not data:
                break
            x = np.frombuffer(data, dtype=np.float64)
            q, dq, ee = x[1 : 1 + n], x[1 + n : 1 + 2 * n], x[1 + 2 * n : 4 + 2 * n]
            conn.send_bytes(policy.tick(q, dq, ee).encode(int(x[0])))
    except Exception as err:  # tell the loop, which stops the robot
        try:
            conn.send_bytes(b"E" + f"{type(err).__name__}: {_one_line(err)}".encode())
        except OSError:
            pass
    finally:
        if restore is not None:
            restore()
        conn.close()


class PolicyWorkerError(RuntimeError):
    """The policy worker failed or exited during the run (the loop stops the robot)."""


class PolicyWorker:
    """A :class:`ShieldedPolicy` in a spawned process; a context manager that always ends it.

    Args:
        bundle: bundle directory (verified again in the worker).
        controller: profile path.
        goal: reach goal (m) or ``None`` for the task's first goal.
        realtime: SCHED_FIFO (priority :data:`WORKER_PRIORITY`) for the worker where permitted.

    Raises:
        DeployError: the worker could not build the policy (bad goal, incompatible bundle, ...)
            or did not start within ``start_timeout_s``.
    """

    def __init__(
        self,
        bundle: str | Path,
        controller: str | Path,
        *,
        goal: FloatArray | None = None,
        realtime: bool = False,
        start_timeout_s: float = 120.0,
    ) -> None:
        ctx = mp.get_context("spawn")  # no fork after torch / numba threads exist
        self.conn, child = ctx.Pipe(duplex=True)
        g = None if goal is None else [float(v) for v in goal]
        self.proc = ctx.Process(
            target=_worker_main,
            args=(child, str(bundle), str(controller), g, realtime),
            name="safebot-policy",
            daemon=True,
        )
        self.proc.start()
        child.close()
        try:
            if not self.conn.poll(start_timeout_s):
                raise DeployError(f"the policy worker did not start within {start_timeout_s:g} s")
            try:
                msg = self.conn.recv()
            except EOFError:
                self.proc.join(5)
                raise DeployError(
                    f"the policy worker exited during start-up (exit code {self.proc.exitcode})"
                ) from None
            if msg[0] == "error":
                cls = _USER_ERRORS.get(msg[1])
                if cls is None:
                    raise DeployError(f"the policy worker failed to start: {msg[1]}: {msg[2]}")
                raise cls(msg[2])
        except BaseException:
            self.close()
            raise
        self.info: dict[str, Any] = msg[1]
        self.realtime: bool = msg[2]

    def request(self, seq: int, q: FloatArray, dq: FloatArray, ee_pos: FloatArray) -> None:
        try:
            self.conn.send_bytes(np.concatenate(([float(seq)], q, dq, ee_pos)).tobytes())
        except OSError as err:
            raise PolicyWorkerError(f"policy worker gone ({type(err).__name__})") from None

    def ready(self) -> bool:
        """A reply (or the worker's end) is waiting."""
        return self.conn.poll()

    def receive(self) -> tuple[int, Tick]:
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            raise PolicyWorkerError(
                f"policy worker exited (exit code {self.proc.exitcode})"
            ) from None
        if data[:1] == b"E":
            raise PolicyWorkerError(f"policy worker failed: {data[1:].decode(errors='replace')}")
        return Tick.decode(data)

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass
        self.conn.close()
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout_s)

    def __enter__(self) -> PolicyWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- the loop side


@dataclass
class _Stats:
    requests: int = 0
    ticks: int = 0
    late_ticks: int = 0
    stale_stops: int = 0
    interventions: int = 0
    status: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    latency_us: list[float] = field(default_factory=list)
    observe_us: list[float] = field(default_factory=list)
    shield_us: list[float] = field(default_factory=list)
    fk_error: float = 0.0


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    a = np.asarray(xs)
    p50, p99 = np.percentile(a, [50, 99])
    return {
        "p50": round(float(p50), 1),
        "p99": round(float(p99), 1),
        "max": round(float(a.max()), 1),
    }


class BundlePolicy:
    """``policy(state) -> qd`` for :func:`run_loop`: holds the worker's latest command.

    Each call costs a poll of the worker's pipe, plus a send on a policy tick and
    a receive when an answer is in; the policy and shield run in the worker.

    Args:
        worker: a started :class:`PolicyWorker`.
        control_hz: the policy's rate (ticks on the controller's clock, ``state.t_ns``).
        dof: joints.
    """

    def __init__(self, worker: PolicyWorker, *, control_hz: float, dof: int) -> None:
        self.worker = worker
        info = worker.info
        self.goal = np.asarray(info["goal"], dtype=np.float64)
        self.threshold = float(info["goal_threshold_m"])
        self.period_ns = round(1e9 / control_hz)
        self.stale_ns = round(STALE_PERIODS * self.period_ns)
        self.zero = np.zeros(dof)
        self.qd = self.zero
        self._seq = 0
        self._pending: tuple[int, int] | None = None  # (seq, t_ns of the state it answers)
        self._next_tick: int | None = None
        self._applied_ns: int | None = None
        self.stats = _Stats()
        self.last_state: RobotState | None = None
        self.final_distance: float | None = None

    def __call__(self, state: RobotState) -> FloatArray:
        self.last_state = state
        now = state.t_ns
        if self._pending is not None and self.worker.ready():
            seq, tick = self.worker.receive()
            if seq == self._pending[0]:
                self.qd = tick.qd
                self._applied_ns = now
                self._record(tick, now - self._pending[1])
                self._pending = None
        if self._next_tick is None or now >= self._next_tick:
            if self._pending is None:
                self._seq += 1
                self.worker.request(self._seq, state.q, state.dq, state.ee_pos)
                self._pending = (self._seq, now)
                self.stats.requests += 1
            else:
                self.stats.late_ticks += 1  # the worker is still on the last tick: skip this one
            nxt = (self._next_tick or now) + self.period_ns
            # far behind (a stall): restart the schedule instead of bursting ticks
            self._next_tick = nxt if nxt > now else now + self.period_ns
        if self._applied_ns is not None and now - self._applied_ns > self.stale_ns:
            if self.qd is not self.zero:
                self.qd = self.zero
                self.stats.stale_stops += 1
        return self.qd

    def _record(self, tick: Tick, latency_ns: int) -> None:
        s = self.stats
        s.ticks += 1
        name = kernels.STATUS_NAMES[tick.status]
        s.status[name] = s.status.get(name, 0) + 1
        s.interventions += tick.intervened
        for code, kind in enumerate(ROW_KINDS):
            if tick.active >> code & 1:
                s.active[kind] = s.active.get(kind, 0) + 1
        s.latency_us.append(latency_ns / 1e3)
        s.observe_us.append(tick.observe_us)
        s.shield_us.append(tick.shield_us)
        s.fk_error = max(s.fk_error, tick.fk_error)

    def distance(self, state: RobotState) -> float:
        """End effector (the stub's plant) to goal (m)."""
        return float(np.linalg.norm(state.ee_pos - self.goal))

    def success(self, state: RobotState) -> bool:
        """The task's success test on the plant: the end effector within the goal threshold."""
        self.final_distance = self.distance(state)
        return self.final_distance < self.threshold

    def summary(self) -> dict[str, Any]:
        s = self.stats
        info = dict(self.worker.info)
        final = self.final_distance
        if final is None and self.last_state is not None:
            final = self.distance(self.last_state)
        return {
            "goal": info.pop("goal"),
            "goal_threshold_m": info.pop("goal_threshold_m"),
            "final_distance_m": final,
            "observation": info.pop("observation", None),
            "retargeted": info.pop("retargeted", None),
            "arm_scene": info.pop("arm_scene", None),
            "policy": {
                "algo": info.pop("algo"),
                "rate_hz": info.pop("rate_hz"),
                "requests": s.requests,
                "ticks": s.ticks,
                "late_ticks": s.late_ticks,
                "stale_stops": s.stale_stops,
                "latency_us": percentiles(s.latency_us),
                "observe_infer_us": percentiles(s.observe_us),
                "shield_us": percentiles(s.shield_us),
                "worker_realtime": self.worker.realtime,
            },
            "shield": {
                "interventions": s.interventions,
                "intervention_rate": round(s.interventions / max(s.ticks, 1), 4),
                "status": s.status,
                "active": s.active,
                **info,
            },
            "kinematics_max_error_m": s.fk_error,
        }


# ----------------------------------------------------------------------------- deploy


@dataclass
class DeployResult:
    """The client's report plus what the bundle glue adds (``deploy``)."""

    report: DeployReport
    deploy: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "deploy": self.deploy}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def deploy(
    bundle: str | Path,
    robot: str,
    *,
    controller: str | Path | None = None,
    host: str | None = None,
    seconds: float = 10.0,
    goal: FloatArray | None = None,
    realtime: bool = False,
    obstacles: bool = True,
) -> DeployResult:
    """Run a bundle on a robot, or on the matching stub when ``host`` is ``None``.

    ``robot`` (``fr3`` / ``panda`` / ``ur5e``) picks the vendor client
    (:data:`ROBOT_CLIENTS`: pylibfranka at 1 kHz, ur_rtde ``speedJ`` at 500 Hz) and the
    shipped profile; ``controller`` may name another profile file for the same robot.

    Args:
        bundle: bundle directory (verified on load).
        robot: ``fr3``, ``panda`` or ``ur5e``.
        controller: a profile path or shipped name overriding the robot's (same arm).
        host: the robot's address; ``None`` starts a stub on loopback (another process).
        seconds: how long the policy runs before the client's stop ramp.
        goal: reach goal (m); default: the task's first goal.
        realtime: SCHED_FIFO for loop, worker and stub where permitted.
        obstacles: put the task's keep-out boxes into the stub's plant.

    Raises:
        BundleError: the bundle is missing, tampered or corrupt.
        SpecError: the controller profile is missing or invalid.
        DeployError: the bundle cannot run on this robot, a bad option, a host that does
            not answer or speaks another protocol version (one line each).
    """
    if not (np.isfinite(seconds) and seconds > 0):
        raise DeployError(f"--seconds must be positive, got {seconds}")
    profile, path = robot_profile(robot, controller)
    client = ROBOT_CLIENTS[robot]
    b = load_bundle(bundle)
    check_compatible(b, profile)  # before anything starts
    if host is not None:
        _probe(client, host)
    with stdout_to_stderr():  # pybullet prints a banner on import; stdout carries the report
        from safebot.deploy.stubs.plant import Box
    with PolicyWorker(b.root, path, goal=goal, realtime=realtime) as worker:
        policy = BundlePolicy(worker, control_hz=b.shield.control_hz, dof=profile.dof)
        boxes = [Box.parse(",".join(map(str, x))) for x in worker.info["keepout_boxes"]]
        boxes = boxes if obstacles else []
        report, stub_stats = _vendor_run(
            client, robot, profile, policy, seconds, host, boxes, realtime
        )
    if report.exit_reason == "connect_failed":
        raise DeployError(report.message)
    extra = {
        "bundle": {"path": str(b.root), "hash": b.digest},
        "robot": robot,
        "host": host,
        **policy.summary(),
        "stub_obstacles": [[*x.center, *x.half_extents] for x in boxes] if host is None else [],
        "stub": stub_stats,
        "versions": _versions(b),
    }
    return DeployResult(report, extra)


def _probe(client: str, host: str) -> None:
    """A host that does not answer is a one-line :class:`DeployError` before anything starts."""
    if client == "franka":
        from safebot.deploy.franka.client import probe_host

        why = probe_host(host, 3.0)
    else:
        from safebot.deploy.ur import rtde

        try:
            rtde.probe(host, timeout_s=3.0)
            why = None
        except rtde.ProbeError as err:
            why = str(err)
    if why is not None:
        raise DeployError(why)


def _versions(b: Bundle) -> dict[str, Any]:
    """The bundle's recorded versions, this runtime's, and which of them differ."""
    from safebot.deploy.export import versions

    runtime = versions()
    return {
        "bundle": b.versions,
        "runtime": runtime,
        "differ": sorted(k for k, v in runtime.items() if b.versions.get(k) not in (None, v)),
    }


def _no_gc(fn: Any) -> DeployReport:
    """``fn()`` with the garbage collector off: no collector pauses inside the control loop."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        return fn()  # type: ignore[no-any-return]
    finally:
        if enabled:
            gc.enable()


def _vendor_run(
    client: str,
    robot: str,
    profile: ControllerProfile,
    policy: BundlePolicy,
    seconds: float,
    host: str | None,
    boxes: list[Any],
    realtime: bool,
) -> tuple[DeployReport, dict[str, object] | None]:
    """The bundle's policy through the vendor's client, on ``host`` or a stub started here."""
    if client == "franka":
        from safebot.deploy.franka.client import run_loop as vendor_loop
    else:  # "ur": the ur_rtde side (safebot.deploy.ur)
        from safebot.deploy.ur.client import run_loop as vendor_loop  # type: ignore[no-redef]

    def go(target: str) -> DeployReport:
        with stdout_to_stderr():  # libfranka logs to stdout; stdout carries the report
            return _no_gc(
                lambda: vendor_loop(
                    profile,
                    policy,
                    seconds,
                    host=target,
                    success_fn=policy.success,
                    realtime=realtime,
                )
            )

    if host is not None:
        return go(host), None
    stub: Any  # FrankaStubProcess or the UR StubProcess: .host, .terminate(), a context manager
    if client == "franka":
        from safebot.deploy.franka.stub import FrankaStubError, spawn_on_free_loopback

        try:
            stub = spawn_on_free_loopback(robot, obstacles=boxes, realtime=realtime)
        except FrankaStubError as err:
            raise DeployError(str(err)) from None
    else:
        from safebot.deploy.ur.stub import StubError, StubProcess

        try:
            stub = StubProcess(profile.name, obstacles=boxes, realtime=realtime)
        except StubError as err:
            raise DeployError(str(err).splitlines()[0]) from None
    with stub:
        report = go(stub.host)
        stats = stub.terminate()
    return report, stats


__all__ = [
    "CLIENT_INTERFACES",
    "EE_AXIS_TO_NORM",
    "ROBOT_CLIENTS",
    "ROBOT_PROFILES",
    "STALE_PERIODS",
    "BundlePolicy",
    "DeployError",
    "DeployResult",
    "PolicyWorker",
    "PolicyWorkerError",
    "ShieldedPolicy",
    "Tick",
    "check_compatible",
    "deploy",
    "intersect_envelope",
    "intersect_joint_limits",
    "parse_goal",
    "retarget_envelope",
    "robot_profile",
]
