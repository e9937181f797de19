"""The shield: a Gymnasium wrapper that projects every action onto the current envelope.

One job: state + action -> safe action. Per step it reads the arm's state
through an :class:`ArmView` adapter, builds the rows ``A u <= b``
(:mod:`safebot.constraints`), solves the exact projection
(:func:`safebot.kernels.project`) and steps the inner env with the result.
It never raises inside ``step`` (design rule 2): a non-finite action or an
infeasible set yields the safe stop and says so in ``info["shield/status"]``.

The step is on the control loop's hot path, so it does that work in three
numba calls on buffers allocated once (state and rows:
:func:`safebot.constraints.arm_rows_into` for safebot's tasks; the projection;
the ``info`` numbers) and recomputes the bounds only when the width changes.
:meth:`SafebotArmView.state`, :func:`safebot.constraints.build` and
:func:`safebot.constraints.margins` remain the readable reference that
``tests/test_constraints_fast.py`` holds the hot path to.

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
from numba import njit

from safebot import constraints, kernels
from safebot.constraints import (
    ROW_KINDS,
    ArmState,
    PackedBounds,
    PackedState,
    StepBuffers,
    pack_state,
)
from safebot.envelope import Envelope, EnvelopeError
from safebot.envs.base import _PINV_DAMPING, ArmTaskEnv
from safebot.envs.physics import F64, ArmPhysics

_INTERVENE_TOL = 1e-9
_FMAX = float(np.finfo(np.float64).max)  # np.nan_to_num's value for inf


# --------------------------------------------------------------- numba helpers
# Per-step work on preallocated arrays, outside the constraint rows (those are
# in safebot.constraints). Plain array functions; the readable reference is
# SafebotArmView.state() and the info code of Shield.step before the fast path
# (tests/test_constraints_fast.py compares them).


@njit(cache=True)
def _arm_contacts(g1: Any, g2: Any, efc: Any, arm_geom: Any, idx: Any) -> int:
    """Indices of the contacts between the arm and the world (as ``state()`` selects them).

    Returns their count; only the first ``len(idx)`` are written.
    """
    n = 0
    for i in range(g1.shape[0]):
        if arm_geom[g1[i]] == arm_geom[g2[i]] or efc[i] < 0:
            continue  # arm-arm or world-world: not a push on the world
        if n < idx.shape[0]:
            idx[n] = i
        n += 1
    return n


@njit(cache=True)
def _finish(
    u: F64,
    u_raw: F64,
    scale: F64,
    ok: bool,
    enabled: bool,
    active: Any,
    kind: Any,
    m: int,
    out: F64,
) -> tuple[float, int]:
    """After the projection ``u``: ``out`` = (the normalised command to send,
    ``nan_to_num(u_raw)``, ``u``); returns the correction norm (NaN unless ok) and
    the bit mask of the row kinds that bind."""
    acc = 0.0
    for i in range(u.shape[0]):
        out[0, i] = (u[i] if enabled or not ok else u_raw[i]) / scale[i]
        x = u_raw[i]
        if np.isnan(x):
            x = 0.0
        elif np.isinf(x):
            x = _FMAX if x > 0 else -_FMAX
        out[1, i] = x
        out[2, i] = u[i]
        d = (u[i] - u_raw[i]) / scale[i]
        acc += d * d
    mask = 0
    for r in range(m):
        if active[r]:
            mask |= 1 << kind[r]
    return (np.sqrt(acc) if ok else np.nan), mask


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

    def pack(self, out: PackedState, *, contacts: bool = True) -> None:
        """Write :meth:`state` into ``out``.

        Adapters may override it with a faster way to the same arrays; ``contacts=False``
        says the contact rows are not needed.
        """
        pack_state(self.state(), len(self.scale), out)

    def rows_into(
        self, a: np.ndarray, bounds: PackedBounds, buf: StepBuffers, *, contacts: bool = True
    ) -> tuple[int, int]:
        """The shield's hot path: the state, the physical action ``u_raw``, the rows and the
        margins into ``buf`` (:func:`safebot.constraints.rows_into`); returns ``(m, margin_mask)``."""
        self.pack(buf.state, contacts=contacts)
        return constraints.step_rows(a, self.scale, buf, bounds)


class SafebotArmView(ArmView):
    """Adapter for safebot's own tasks (:class:`~safebot.envs.base.ArmTaskEnv`).

    :meth:`state` is the readable reference; :meth:`pack` and :meth:`rows_into`
    reach the same numbers in one numba call on MuJoCo's arrays
    (:func:`safebot.constraints.arm_state_into`), with no Python objects per step.
    """

    def __init__(self, env: ArmTaskEnv) -> None:
        self.env = env
        self.scale = env.action_scale.copy()
        self.dt = env.dt
        phys = env.physics
        model = env.model
        spec = env.task.limits.keepout
        self._sites = [phys.site_id(s) for s in spec.sites] if spec is not None else []
        self._force = np.zeros(6)
        geoms = spec.geoms if spec is not None else []
        boxes = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in geoms]
        self._idx = constraints.arm_index(
            model,
            k=len(self.scale),
            joints=phys.joint_ids,
            ee_site=phys.ee_site_id,
            sites=self._sites,
            boxes=boxes,
        )
        # the fast path holds while the env uses ArmTaskEnv's own action map, keep-out boxes and
        # physics accessors (it reads MuJoCo's arrays itself); otherwise state() is packed as is
        cls = type(env)
        self._fast = (
            self._idx is not None
            and type(phys) is ArmPhysics
            and cls.action_map is ArmTaskEnv.action_map
            and cls.keepout_boxes is ArmTaskEnv.keepout_boxes
            and env.action_mode in ("joint_velocity", "ee_velocity")
        )
        self._mode = 1 if env.action_mode == "ee_velocity" else 0
        self._sizes = (phys.n, len(self._sites), len(boxes))
        self._rows_base = 2 * len(self.scale) + 2 * phys.n + 20 + len(self._sites) * len(boxes)
        self._con = np.zeros((0, 4 + 3 * model.nv))
        self._work = np.zeros((4, phys.n))  # scratch of arm_state_into
        self._grow_contacts(4)
        self._data: Any = None
        self._mj: tuple[np.ndarray, ...] = ()
        self._reserved: tuple[Any, int] = (None, 0)  # (StepBuffers, contacts) reserved for

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
            # each site is the centre of a bulky link: its size is the link's rough radius
            site_radius=[float(env.model.site_size[s, 0]) for s in self._sites],
        )

    def pack(self, out: PackedState, *, contacts: bool = True) -> None:
        if not self._fast:
            return super().pack(out, contacts=contacts)
        nc = self._prepare(contacts)
        out.reserve(*self._sizes, nc)
        qpos, xanchor, xaxis, site_xpos, geom_xpos, geom_size, site_size = self._mj
        constraints.arm_state_into(
            self._mode, _PINV_DAMPING, self._idx, qpos, xanchor, xaxis, site_xpos, geom_xpos,
            geom_size, site_size, self.env.q_low, self.env.q_high, self._con, nc, self._work,
            out.Fk, out.F3, out.F1, out.dims,
        )  # fmt: skip
        return None

    def rows_into(
        self, a: np.ndarray, bounds: PackedBounds, buf: StepBuffers, *, contacts: bool = True
    ) -> tuple[int, int]:
        if not self._fast:
            return super().rows_into(a, bounds, buf, contacts=contacts)
        nc = self._prepare(contacts)
        st = buf.state
        if nc > self._reserved[1] or buf is not self._reserved[0]:  # capacities only grow
            st.reserve(*self._sizes, nc)
            buf.reserve_rows(self._rows_base + min(nc, constraints.MAX_CONTACT_ROWS))
            self._reserved = (buf, nc)
        qpos, xanchor, xaxis, site_xpos, geom_xpos, geom_size, site_size = self._mj
        return constraints.arm_rows_into(  # type: ignore[no-any-return]
            self._mode, _PINV_DAMPING, self._idx, qpos, xanchor, xaxis, site_xpos, geom_xpos,
            geom_size, site_size, self.env.q_low, self.env.q_high, self._con, nc, self._work,
            a, self.scale, buf.u_raw, st.Fk, st.F3, st.F1, st.dims, bounds.F, bounds.flags,
            buf.A, buf.b, buf.kind, buf.margins,
        )  # fmt: skip

    def _prepare(self, contacts: bool) -> int:
        """Bind MuJoCo's arrays (once per ``MjData``) and gather the contacts; their count."""
        env = self.env
        m, d = env.model, env.data
        if d is not self._data:  # views of MuJoCo's arrays, taken once per MjData
            self._data = d
            self._mj = (
                d.qpos, d.xanchor, d.xaxis, d.site_xpos, d.geom_xpos, m.geom_size, m.site_size,
            )  # fmt: skip
        return self._gather_contacts(m, d) if contacts and d.ncon else 0

    def _gather_contacts(self, m: mujoco.MjModel, d: mujoco.MjData) -> int:
        """Arm-vs-world contacts into ``self._con`` (as :meth:`state` selects them)."""
        con = d.contact
        g1, g2 = con.geom1, con.geom2
        arm = self.env.physics.arm_geom
        n = _arm_contacts(g1, g2, con.efc_address, arm, self._con_idx)
        if n > len(self._con_idx):  # more than the buffers hold: grow and gather again
            self._grow_contacts(n)
            n = _arm_contacts(g1, g2, con.efc_address, arm, self._con_idx)
        if n:
            frame, pos, bodies = con.frame, con.pos, m.geom_bodyid
            for j in range(n):
                i = int(self._con_idx[j])
                mujoco.mj_contactForce(m, d, i, self._force)
                arm1 = arm[g1[i]]
                row = self._con[j]
                row[0] = abs(float(self._force[0]))
                # frame[:3] points from geom1 to geom2; we want arm -> other
                row[1:4] = frame[i, :3] if arm1 else -frame[i, :3]
                body = bodies[g1[i] if arm1 else g2[i]]
                mujoco.mj_jac(m, d, self._con_jacs[j], None, pos[i], body)
        return n

    def _grow_contacts(self, n: int) -> None:
        nv = (self._con.shape[1] - 4) // 3
        self._con_idx = np.zeros(2 * n, dtype=np.int64)
        self._con = np.zeros((2 * n, 4 + 3 * nv))
        self._con_jacs = [row[4:].reshape(3, nv) for row in self._con]  # views for mj_jac


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


class Shield(gym.Wrapper[Any, np.ndarray, Any, np.ndarray], gym.utils.RecordConstructorArgs):
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
        # recorded so env.spec can rebuild the wrapper stack (gymnasium's check_env does)
        passed: dict[str, Any] = {"envelope": envelope, "scheduler": scheduler, "arm": arm}
        gym.utils.RecordConstructorArgs.__init__(
            self,
            observe_width=observe_width,
            enabled=enabled,
            **{k: v for k, v in passed.items() if v is not None},
        )
        gym.Wrapper.__init__(self, env)
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
        # hot path (step): buffers reused every step, bounds packed once per width
        self._buf = StepBuffers(n)
        self._bounds_key: tuple[Any, ...] = ()
        self._pack_bounds()  # sets _bounds, _contacts, _mean_width
        # info keys of the margins present, by the bit mask rows_into returns
        kinds = constraints.MARGIN_KINDS
        self._margin_keys = [
            [(i, f"shield/margin/{k}") for i, k in enumerate(kinds) if mask >> i & 1]
            for mask in range(1 << len(kinds))
        ]
        self._names_by_mask: dict[int, tuple[str, ...]] = {}
        kernels.warmup()

    # ------------------------------------------------------------------ width
    @property
    def width(self) -> dict[str, float]:
        return self.envelope.width

    def set_width(self, width: float | dict[str, float]) -> None:
        """Set the envelope width (one value or per limit kind); clamped to [0, 1]."""
        self.envelope.set_width(width)

    # ---------------------------------------------------------------- gym API
    def compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """The wrapped goal env's reward (the shield changes actions, not rewards)."""
        return self.env.get_wrapper_attr("compute_reward")(achieved_goal, desired_goal, info)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if self.scheduler is not None:
            self.envelope.set_width(self.scheduler.width)
        obs, info = self.env.reset(seed=seed, options=options)
        info["shield/width"] = self.envelope.mean_width()
        return self._augment(obs), info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)  # one numba specialisation
        scale = self.arm.scale
        k = len(scale)
        if a.shape[0] != k:
            raise ValueError(f"action has shape {np.shape(action)}, expected ({k},)")
        if self._bounds_key != self._envelope_key():
            self._pack_bounds()
        bounds, buf = self._bounds, self._buf
        # state -> u_raw = scale * clip(a), rows A u <= b, margins: one numba call for safebot arms
        m, margin_mask = self.arm.rows_into(a, bounds, buf, contacts=self._contacts)
        if m < 0:
            raise ValueError(
                f"joint_velocity bound has {int(bounds.par[constraints.P_NJV])} values, "
                f"the arm {int(buf.state.dims[constraints.D_NQ])} joints"
            )
        u, u_raw, active = buf.u, buf.u_raw, buf.active
        status = kernels.project_into(
            u_raw, buf.A[:m], buf.b[:m], self._w, self._safe, u, active[:m]
        )
        ok = status == kernels.STATUS_OK
        out = np.empty((3, k))  # fresh each step: the caller may keep last_action / last_projected
        correction, active_mask = _finish(
            u, u_raw, scale, ok, self.enabled, active, buf.kind, m, out
        )
        send, self.last_action, self.last_projected = out  # last_action = nan_to_num(u_raw)
        obs, reward, terminated, truncated, info = self.env.step(send)
        info["shield/intervened"] = not ok or correction > _INTERVENE_TOL
        info["shield/correction"] = correction
        names = self._names_by_mask.get(active_mask)
        info["shield/active"] = list(names if names is not None else self._names(active_mask))
        info["shield/status"] = kernels.STATUS_NAMES[status]
        info["shield/width"] = self._mean_width
        if margin_mask:
            margins = buf.margins.tolist()
            for i, key in self._margin_keys[margin_mask]:
                info[key] = margins[i]
        if self.observe_width:
            obs = self._augment(obs)
        return obs, float(reward), terminated, truncated, info

    # ------------------------------------------------------------- hot-path caches
    def _pack_bounds(self) -> None:
        """The bounds as arrays, recomputed only when the width, the gains or the envelope object
        change (``Envelope.set_width`` bumps its revision); a ``Limit`` swapped into
        ``envelope.limits`` in place is seen at the next width change."""
        self._bounds: PackedBounds
        self._contacts: bool
        self._mean_width: float
        self._width_obs: np.ndarray
        self._bounds_key = self._envelope_key()
        self._bounds = constraints.pack_bounds(self.envelope.bounds(), self.envelope, self.arm.dt)
        self._contacts = bool(self._bounds.flags[constraints.F_CONTACT])  # contact rows needed
        self._mean_width = self.envelope.mean_width()
        w = self.envelope.width
        self._width_obs = np.array([w[k] for k in self.envelope.kinds])

    def _envelope_key(self) -> tuple[Any, ...]:
        env = self.envelope
        return (env, env._revision, env.barrier_gain, env.joint_gain)

    def _names(self, mask: int) -> tuple[str, ...]:
        """Names of the limit kinds in ``mask`` (bits of ROW_KINDS), sorted, action box left out."""
        names = tuple(sorted(ROW_KINDS[i] for i in range(1, len(ROW_KINDS)) if mask >> i & 1))
        self._names_by_mask[mask] = names
        return names

    def _augment(self, obs: Any) -> Any:
        if not self.observe_width:
            return obs
        if self._bounds_key != self._envelope_key():
            self._pack_bounds()  # reset() after a width change: the cached width observation too
        return {**obs, "observation": np.concatenate([obs["observation"], self._width_obs])}
