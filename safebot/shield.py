"""The shield: a Gymnasium wrapper that projects every action onto the current envelope.

One job: state + action -> safe action. Per step it reads the arm's state
through an :class:`ArmView` adapter, builds the rows ``A u <= b``
(:mod:`safebot.constraints`), solves the exact projection
(:func:`safebot.kernels.project`) and steps the inner env with the result.
It never raises inside ``step`` (design rule 2): a non-finite action or an
infeasible set yields the safe stop and says so in ``info["shield/status"]``.

The policy's action space never changes: actions in [-1, 1] scale to the *hard
caps*; the width moves only the rows. The metric of the projection is the
normalised action, so a correction of 0.1 means the same on every axis.

Example:
    >>> env = Shield(safebot.envs.make("reach"))               # envelope from the task's [limits]
    >>> env = Shield(gym.make("FetchPush-v4"), Envelope({"ee_speed": Limit.make("ee_speed", 0.3, 1.2)}))
"""

from __future__ import annotations

import abc
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from safebot import constraints, kernels
from safebot.constraints import ROW_KINDS, ArmState
from safebot.envelope import Envelope, EnvelopeError
from safebot.envs.base import ArmTaskEnv
from safebot.envs.physics import F64

_INTERVENE_TOL = 1e-9


class ArmView(abc.ABC):
    """Adapter: the accessors the shield needs, for one kind of env.

    Attributes:
        scale: physical units per unit of normalised action, one per action entry.
        dt: control period (s).
    """

    scale: F64
    dt: float

    @abc.abstractmethod
    def state(self) -> ArmState:
        """The arm's state now, with every velocity as an affine map of the physical action."""


class SafebotArmView(ArmView):
    """Adapter for safebot's own tasks (:class:`~safebot.envs.base.ArmTaskEnv`)."""

    def __init__(self, env: ArmTaskEnv) -> None:
        self.env = env
        self.scale = env.action_scale.copy()
        self.dt = env.dt
        phys = env.physics
        spec = env.task.limits.keepout
        self._sites = [phys.site_id(s) for s in spec.sites] if spec is not None else []
        self._force = np.zeros(6)

    def state(self) -> ArmState:
        env, phys = self.env, self.env.physics
        M, c = env.action_map()
        J = phys.ee_jacobian()
        sites = []
        for s in self._sites:
            S = phys.site_jacobian(s)
            sites.append((phys.site_pos(s), (S @ M, S @ c)))
        contacts = []
        d = env.data
        for i in range(d.ncon):
            con = d.contact[i]
            g1, g2 = con.geom1, con.geom2
            arm1, arm2 = phys.arm_geom[g1], phys.arm_geom[g2]
            if (
                arm1 == arm2 or con.efc_address < 0
            ):  # arm-arm or world-world: not a push on the world
                continue
            mujoco.mj_contactForce(env.model, d, i, self._force)
            # frame[:3] points from geom1 to geom2; we want arm -> other
            n = con.frame[:3] if arm1 else -con.frame[:3]
            body = env.model.geom_bodyid[g1 if arm1 else g2]
            Jp = phys.point_jacobian(con.pos, body)
            row = n @ Jp
            contacts.append((abs(float(self._force[0])), (row @ M, np.asarray(row @ c))))
        return ArmState(
            dt=self.dt,
            ee_pos=phys.ee_pos(),
            ee_map=(J @ M, J @ c),
            qd_map=(M, c),
            q=phys.qpos(),
            q_low=env.q_low,
            q_high=env.q_high,
            sites=sites,
            boxes=env.keepout_boxes(),
            contacts=contacts,
        )


class FetchArmView(ArmView):
    """Adapter for gymnasium-robotics Fetch tasks (``FetchReach/Push/PickAndPlace-v4``).

    Fetch actions are end-effector displacements (``0.05 * a`` metres per step,
    through a mocap weld) plus a gripper command. The physical action is the
    end-effector velocity ``0.05 a / dt`` (m/s) on the first three entries; the
    gripper entry passes through (scale 1, box rows only). There is no joint
    access (the arm follows the mocap), so joint limits are not enforced.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env = env.unwrapped
        u = self.env
        self.dt = float(u.dt)  # type: ignore[attr-defined]
        self.scale = np.array([0.05 / self.dt] * 3 + [1.0])
        self._E = np.hstack([np.eye(3), np.zeros((3, 1))])  # ee velocity = the physical u[:3]
        self._site = mujoco.mj_name2id(u.model, mujoco.mjtObj.mjOBJ_SITE, "robot0:grip")  # type: ignore[attr-defined]
        if self._site < 0:
            raise TypeError("FetchArmView needs a Fetch env with the 'robot0:grip' site")

    def state(self) -> ArmState:
        d = self.env.data  # type: ignore[attr-defined]
        return ArmState(
            dt=self.dt, ee_pos=d.site_xpos[self._site].copy(), ee_map=(self._E, np.zeros(3))
        )


def arm_view(env: gym.Env[Any, Any]) -> ArmView:
    """Pick the adapter for ``env`` (safebot task or gymnasium-robotics Fetch)."""
    inner = env.unwrapped
    if isinstance(inner, ArmTaskEnv):
        return SafebotArmView(inner)
    if type(inner).__name__.startswith("MujocoFetch") or (
        hasattr(inner, "_utils") and hasattr(inner, "block_gripper")
    ):
        return FetchArmView(env)
    raise TypeError(
        f"Shield has no adapter for {type(inner).__name__}; pass arm=... (an ArmView) explicitly"
    )


class Shield(gym.Wrapper[Any, np.ndarray, Any, np.ndarray]):
    """Project each action onto the commands that respect the envelope.

    Args:
        env: a safebot task or a Fetch task (or any env with an ``arm`` adapter).
        envelope: the limits; default: the safebot task's ``[limits]``.
        scheduler: optional; its width is applied at every reset (in-process training).
        observe_width: append the width per limit kind to ``observation`` (Saute/Simmer-style
            safety-state augmentation) so widening does not make the task non-stationary.
        arm: adapter override.
        enabled: ``False`` passes actions through (still reports what the shield would have done).

    ``info`` gains ``shield/intervened`` (bool), ``shield/correction`` (norm of the change, in
    normalised action units), ``shield/active`` (limit kinds that bind), ``shield/status``
    (``ok``/``infeasible``/``nonfinite``/...), ``shield/width`` (mean width) and
    ``shield/margin/<kind>`` (distance to each position-like bound, >= 0 inside).
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        envelope: Envelope | None = None,
        scheduler: Any | None = None,
        *,
        observe_width: bool = False,
        arm: ArmView | None = None,
        enabled: bool = True,
    ) -> None:
        if not isinstance(env.action_space, spaces.Box):
            raise TypeError(
                f"Shield needs a Box action space, got {type(env.action_space).__name__}"
            )
        super().__init__(env)
        self.arm = arm if arm is not None else arm_view(env)
        if envelope is None:
            inner = env.unwrapped
            if not isinstance(inner, ArmTaskEnv):
                raise EnvelopeError("Shield needs an envelope for envs that are not safebot tasks")
            envelope = Envelope.from_spec(inner.task.limits)
        self.envelope = envelope
        self.scheduler = scheduler
        self.enabled = enabled
        self.observe_width = observe_width
        n = self.env.action_space.shape[0]  # type: ignore[index]
        if self.arm.scale.shape != (n,):
            raise TypeError(f"adapter scale has shape {self.arm.scale.shape}, action space ({n},)")
        self._w = 1.0 / self.arm.scale**2  # project in normalised-action units
        self._safe = np.zeros(n)
        self.last_action = np.zeros(n)  # raw (physical) and projected, for overlays
        self.last_projected = np.zeros(n)
        if observe_width:
            obs_space = self.env.observation_space
            if not isinstance(obs_space, spaces.Dict) or "observation" not in obs_space.spaces:
                raise TypeError(
                    "observe_width needs a Dict observation space with an 'observation' entry"
                )
            inner_box = obs_space.spaces["observation"]
            assert isinstance(inner_box, spaces.Box)
            k = len(self.envelope.kinds)
            low = np.concatenate([inner_box.low, np.zeros(k)])
            high = np.concatenate([inner_box.high, np.ones(k)])
            self.observation_space = spaces.Dict(
                {**obs_space.spaces, "observation": spaces.Box(low, high, dtype=inner_box.dtype)}
            )
        kernels.warmup()

    # ------------------------------------------------------------------ width
    @property
    def width(self) -> dict[str, float]:
        return self.envelope.width

    def set_width(self, width: float | dict[str, float]) -> None:
        """Set the envelope width (one value or per limit kind); clamped to [0, 1]."""
        self.envelope.set_width(width)

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if self.scheduler is not None:
            self.envelope.set_width(self.scheduler.width)
        obs, info = self.env.reset(seed=seed, options=options)
        info["shield/width"] = self.envelope.mean_width()
        return self._augment(obs), info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        # NaN/inf must reach the kernel as non-finite (its status says so); clipping would hide inf
        u_raw = (
            np.clip(a, -1.0, 1.0) * self.arm.scale
            if np.isfinite(a).all()
            else np.full(a.shape, np.nan)
        )
        state = self.arm.state()
        bounds = self.envelope.bounds()
        rows = constraints.build(state, self.envelope, self.arm.scale, bounds)
        u, active, status = kernels.project(u_raw, rows.A, rows.b, self._w, self._safe)
        status = int(status)
        self.last_action = np.nan_to_num(u_raw)
        self.last_projected = u
        send = u if self.enabled or status != kernels.STATUS_OK else u_raw
        obs, reward, terminated, truncated, info = self.env.step(send / self.arm.scale)
        if status == kernels.STATUS_OK:
            diff = (u - u_raw) / self.arm.scale
            correction = float(np.sqrt(diff @ diff))
        else:
            correction = float("nan")
        active_kinds = sorted({ROW_KINDS[k] for k in rows.kind[active]} - {"action_box"})
        info["shield/intervened"] = status != kernels.STATUS_OK or correction > _INTERVENE_TOL
        info["shield/correction"] = correction
        info["shield/active"] = active_kinds
        info["shield/status"] = kernels.STATUS_NAMES[status]
        info["shield/width"] = self.envelope.mean_width()
        for kind, margin in constraints.margins(state, bounds).items():
            info[f"shield/margin/{kind}"] = margin
        return self._augment(obs), float(reward), terminated, truncated, info

    def _augment(self, obs: Any) -> Any:
        if not self.observe_width:
            return obs
        w = self.envelope.width
        extra = np.array([w[k] for k in self.envelope.kinds])
        return {**obs, "observation": np.concatenate([obs["observation"], extra])}
