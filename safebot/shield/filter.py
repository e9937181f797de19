"""The safety filter: the one place an action becomes a safe command (docs/design.md, rule 7).

``SafetyFilter(envelope, view).filter(a)`` reads the arm's state through its view,
builds the rows ``A u <= b`` of the envelope's current bounds
(:mod:`safebot.shield.rows`), solves the exact projection
``min ||u - u_raw||_W^2  s.t.  A u <= b`` (:func:`safebot.kernels.solve_into`, with
``W = 1 / scale^2`` so a correction of 0.1 means the same on every axis) and returns
a :class:`FilterResult`. The Gymnasium :class:`~safebot.shield.wrapper.Shield`,
``safebot deploy``, rendering and the benchmarks all call it; nothing else projects.

It never raises on the step path for bad numbers (rule 2): a non-finite action or
state, or an infeasible set, gives the safe stop ``u = 0`` and says so in
``status``. Shape errors (an action of the wrong size) do raise: they are bugs.

Hot path: for a :class:`~safebot.shield.views.MujocoArmView` one step is one numba
call (state -> rows -> projection -> finish) on buffers allocated once; the bounds
are recomputed only when the envelope's revision or gains change. Other views pack
their :class:`~safebot.shield.packed.ArmState` in Python first, then make the same call
from the packed state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import njit

from safebot import kernels
from safebot.envelope import Envelope
from safebot.shield.kinematics import arm_state_into
from safebot.shield.packed import (
    D_NQ,
    F64,
    F_CONTACT,
    MARGIN_KINDS,
    ROW_KINDS,
    PackedBounds,
    PackedState,
    pack_bounds,
    row_capacity_of,
)
from safebot.shield.rows import bounds_error, build_into, margins_into, physical_action
from safebot.shield.views import ArmView, MujocoArmView, pack_view

INTERVENE_TOL = 1e-9
"""A correction (normalised action units) above this counts as an intervention."""

_FMAX = float(np.finfo(np.float64).max)  # np.nan_to_num's value for inf


class FilterResult(NamedTuple):
    """One filtered action.

    Attributes:
        u: the physical command to execute: the projection, ``u_raw`` when the filter does
            not enforce, the safe stop (zeros) when the projection failed.
        u_raw: the physical action asked for (``scale * clip(a)``, NaN/inf replaced as
            ``np.nan_to_num`` does), for overlays and logs.
        status: ``"ok"``, ``"infeasible"``, ``"nonfinite"`` or ``"maxiter"``; all but ``"ok"``
            command the safe stop.
        active: the limit kinds whose rows bind (sorted; the action box left out).
        correction: ``||(u - u_raw) / scale||``, NaN unless ``status == "ok"``.
        margins: distance to each position-like bound, ``>= 0`` inside
            (``workspace``, ``keepout``, ``joint_position``, ``contact_force``, where enforced).
        intervened: the command differs from the action asked for (or the safe stop).
    """

    u: F64
    u_raw: F64
    status: str
    active: tuple[str, ...]
    correction: float
    margins: dict[str, float]
    intervened: bool


class _Work(NamedTuple):
    """The step's outputs and scratch (one numba argument); rebuilt when the rows grow."""

    u_raw: F64
    u: F64
    A: F64
    b: F64
    kind: Any
    active: Any
    margins: F64
    out: F64  # rows: the command (physical), nan_to_num(u_raw), the projection
    fwork: F64  # the projection's workspaces (kernels.work), reused every step
    iwork: Any


class _Problem(NamedTuple):
    """What changes only with the width: scale, weights, safe command, packed bounds."""

    scale: F64
    w: F64
    safe: F64
    F: F64
    flags: Any


class _State(NamedTuple):
    Fk: F64
    F3: F64
    F1: F64
    dims: Any


@njit(cache=True)
def _finish(p: _Problem, wk: _Work, m: int, status: int, enforce: bool) -> tuple[float, int]:
    """``wk.out`` = (command, ``nan_to_num(u_raw)``, projection); the correction norm (NaN
    unless ok) and the bit mask of the row kinds that bind."""
    ok = status == 0
    acc = 0.0
    for i in range(wk.u.shape[0]):
        ui, ri = wk.u[i], wk.u_raw[i]
        wk.out[0, i] = ui if enforce or not ok else ri
        x = ri
        if np.isnan(x):
            x = 0.0
        elif np.isinf(x):
            x = _FMAX if x > 0 else -_FMAX
        wk.out[1, i] = x
        wk.out[2, i] = ui
        d = (ui - ri) / p.scale[i]
        acc += d * d
    mask = 0
    for r in range(m):
        if wk.active[r]:
            mask |= 1 << wk.kind[r]
    return (np.sqrt(acc) if ok else np.nan), mask


@njit(cache=True)
def _project(
    a: Any, p: _Problem, st: _State, wk: _Work, enforce: bool
) -> tuple[int, int, int, int, float]:
    """Rows, margins, projection and finish from a packed state.

    Returns ``(m, status, active_mask, margin_mask, correction)``; ``m = -1``: bad bounds.
    """
    physical_action(a, p.scale, wk.u_raw)
    m = build_into(p.scale, st.Fk, st.F3, st.F1, st.dims, p.F, p.flags, wk.A, wk.b, wk.kind)
    margin_mask = margins_into(st.Fk, st.F3, st.F1, st.dims, p.F, p.flags, wk.margins)
    if m < 0:
        return m, 0, 0, 0, np.nan
    status = kernels.solve_into(
        wk.u_raw, wk.A[:m], wk.b[:m], p.w, p.safe, wk.u, wk.active[:m], wk.fwork, wk.iwork
    )
    correction, active_mask = _finish(p, wk, m, status, enforce)
    return m, status, active_mask, margin_mask, correction


# The two entry points from Python take their arrays positionally, in the order of
# SafetyFilter._common: numba's dispatcher types every argument on each call, and a
# NamedTuple of arrays costs 2.4x what the same arrays cost as positional arguments
# (4.9 vs 2.0 us for 24 arrays, measured here). Inside, they are grouped again.
# P: rows scale, w = 1 / scale^2, safe command; V: rows u_raw, u, then the three of out.


@njit(cache=True)
def _filter_packed(
    a: Any, enforce: bool, P: F64, F: F64, flags: Any, Fk: F64, F3: F64, F1: F64, dims: Any,
    V: F64, A: F64, b: F64, kind: Any, active: Any, margins: F64, fwork: F64, iwork: Any,
) -> tuple[int, int, int, int, float]:  # fmt: skip
    """:func:`_project` from a packed state (any view)."""
    p = _Problem(P[0], P[1], P[2], F, flags)
    wk = _Work(V[0], V[1], A, b, kind, active, margins, V[2:5], fwork, iwork)
    return _project(a, p, _State(Fk, F3, F1, dims), wk, enforce)


@njit(cache=True)
def _filter_mujoco(
    a: Any, enforce: bool, P: F64, F: F64, flags: Any, Fk: F64, F3: F64, F1: F64, dims: Any,
    V: F64, A: F64, b: F64, kind: Any, active: Any, margins: F64, fwork: F64, iwork: Any,
    mode: int, damping: float, idx: Any, qpos: F64, xanchor: F64, xaxis: F64, site_xpos: F64,
    site_size: F64, boxes: F64, q_low: F64, q_high: F64, con: F64, nc: int, scratch: F64,
) -> tuple[int, int, int, int, float]:  # fmt: skip
    """A MuJoCo arm's whole step in one call: its state (:func:`arm_state_into`), then
    rows, margins, projection and finish (:func:`_project`)."""
    arm_state_into(
        mode, damping, idx, qpos, xanchor, xaxis, site_xpos, site_size, boxes, q_low, q_high,
        con, nc, scratch, Fk, F3, F1, dims,
    )  # fmt: skip
    p = _Problem(P[0], P[1], P[2], F, flags)
    wk = _Work(V[0], V[1], A, b, kind, active, margins, V[2:5], fwork, iwork)
    return _project(a, p, _State(Fk, F3, F1, dims), wk, enforce)


class SafetyFilter:
    """Project actions onto the commands that respect ``envelope`` for the arm seen by ``view``.

    Args:
        envelope: the limits (its width may change between calls; the bounds follow).
        view: the arm adapter (:mod:`safebot.shield.views`).
        enforce: ``False`` executes the raw action but still reports what the filter would
            have done (a shield-off baseline with the same measurements).

    Example:
        >>> f = SafetyFilter(Envelope.from_spec(env.task.limits), MujocoArmView(env.kinematics))
        >>> res = f.filter(policy(obs))          # normalised action in [-1, 1]^k
        >>> env.step(res.u / f.scale)            # or f.joint_velocity(res.u) on a robot
    """

    def __init__(self, envelope: Envelope, view: ArmView, *, enforce: bool = True) -> None:
        self.envelope = envelope
        self.view = view
        self.enforce = enforce
        self.scale = np.asarray(view.scale, dtype=np.float64).copy()
        if self.scale.ndim != 1 or not np.all(self.scale > 0):
            raise ValueError(f"the view's scale must be positive, got {self.scale.tolist()}")
        self.k = k = len(self.scale)
        self.packed = PackedState(k)
        self._rows = 0
        self._common: tuple[Any, ...] = ()
        self._reserve_rows(64)
        self._bounds_key: tuple[Any, ...] = ()
        self._reserved = -1  # contacts the packed state and the rows were sized for
        self._names: dict[int, tuple[str, ...]] = {}
        self._margin_keys = [
            [(i, kind) for i, kind in enumerate(MARGIN_KINDS) if mask >> i & 1]
            for mask in range(1 << len(MARGIN_KINDS))
        ]
        self.refresh_bounds()
        kernels.warmup()

    # ---------------------------------------------------------------- bounds
    def refresh_bounds(self) -> None:
        """Recompute the packed bounds now (done automatically when the envelope changes)."""
        env = self.envelope
        self._bounds_key = self._key()
        self.bounds: PackedBounds = pack_bounds(env.bounds(), env, self.view.dt)
        self.contacts = bool(self.bounds.flags[F_CONTACT])  # contact rows needed
        self._P = np.stack([self.scale, 1.0 / self.scale**2, np.zeros(self.k)])
        self._common = ()  # rebuilt at the next step

    def _key(self) -> tuple[Any, ...]:
        env = self.envelope
        return (env, env.revision, env.barrier_gain, env.joint_gain)

    def _reserve_rows(self, m: int) -> None:
        if m > self._rows:
            self._rows, k = m, self.k
            self.V = np.zeros((5, k))  # u_raw, u, and out: command, nan_to_num(u_raw), projection
            self.A, self.b = np.zeros((m, k)), np.zeros(m)
            self.kind, self.active = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.bool_)
            self.margins = np.zeros(len(MARGIN_KINDS))
            self.fwork, self.iwork = kernels.work(m, k)
            self._common = ()

    def _common_args(self) -> tuple[Any, ...]:
        """The arrays both numba entry points take first (after the action and ``enforce``)."""
        if not self._common:
            st, bd = self.packed, self.bounds
            self._common = (
                self._P, bd.F, bd.flags, st.Fk, st.F3, st.F1, st.dims,
                self.V, self.A, self.b, self.kind, self.active, self.margins,
                self.fwork, self.iwork,
            )  # fmt: skip
        return self._common

    # ------------------------------------------------------------------ step
    def filter(self, action: Any) -> FilterResult:
        """Filter one normalised action (``[-1, 1]^k``; scaled to the hard caps).

        Raises:
            ValueError: ``action`` has the wrong number of entries, or the envelope's joint
                velocity bound does not fit the arm's joints.
        """
        a = np.asarray(action, dtype=np.float64).reshape(-1)  # one numba specialisation
        if a.shape[0] != self.k:
            raise ValueError(f"action has shape {np.shape(action)}, expected ({self.k},)")
        if self._bounds_key != self._key():
            self.refresh_bounds()
        m, status, active_mask, margin_mask, correction = self._run(a)
        if m < 0:
            raise bounds_error(self.bounds, self.packed)
        out = self.V[2:5].copy()  # fresh each step: callers may keep the arrays
        names = self._names.get(active_mask)
        if names is None:
            names = self._names[active_mask] = tuple(
                sorted(ROW_KINDS[i] for i in range(1, len(ROW_KINDS)) if active_mask >> i & 1)
            )
        marg = self.margins
        margins = {kind: float(marg[i]) for i, kind in self._margin_keys[margin_mask]}
        ok = status == kernels.STATUS_OK
        return FilterResult(
            u=out[0],
            u_raw=out[1],
            status=kernels.STATUS_NAMES[status],
            active=names,
            correction=correction,
            margins=margins,
            intervened=not ok or correction > INTERVENE_TOL,
        )

    def _run(self, a: F64) -> tuple[int, int, int, int, float]:
        st = self.packed
        view = self.view
        if isinstance(view, MujocoArmView):
            nc = view.prepare(self.contacts)
            if nc > self._reserved:  # capacities only grow
                st.reserve(*view.sizes, nc)
                self._reserve_rows(int(row_capacity_of(self.k, *view.sizes, nc)))
                self._reserved = nc
                self._common = ()
            return _filter_mujoco(  # type: ignore[no-any-return, call-arg]
                a, self.enforce, *self._common_args(), *view.args, nc, view.work
            )
        pack_view(view, st)
        self._reserve_rows(st.max_rows())
        self._common = ()  # packing may have grown the state's buffers
        return _filter_packed(a, self.enforce, *self._common_args())  # type: ignore[no-any-return, call-arg]

    # ------------------------------------------------------------ afterwards
    def joint_velocity(self, u: F64) -> F64:
        """The joint velocities ``qd = M u + c`` a physical command ``u`` means at the state of the
        last :meth:`filter` call (the arm's action map; what a robot's joint-velocity interface takes).

        Raises:
            TypeError: the view has no joint access (a Fetch mocap arm).
        """
        st = self.packed
        nq = int(st.dims[D_NQ])
        if nq == 0:
            raise TypeError("this arm view has no joints (its commands are Cartesian)")
        return np.asarray(st.M[:nq] @ u + st.c[:nq], dtype=np.float64)
