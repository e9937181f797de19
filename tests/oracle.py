"""The test oracle: a pure-NumPy twin of the safety filter's rows and of a MuJoCo arm's state.

Readable, slow and independent of the numba implementation in ``safebot/shield/``:
``tests/shield/`` and ``safebot bench safety`` hold the filter to it. It follows the
same conventions (docs/design.md, rules 1-2): every limit a linear row in the physical
action ``u``, barrier rows for position-like limits, the same row order.
"""

from __future__ import annotations

import mujoco
import numpy as np

from safebot.envelope import Bounds, Envelope
from safebot.shield import ArmKinematics, ArmState
from safebot.shield.packed import F64, KIND_CODE, MAX_CONTACT_ROWS, Rows, kind_rows
from safebot.shield.rows import CONTACT_APPROACH_SPEED, CORNERS


def _barrier_rhs(dist: F64, gain: float, backoff: float) -> F64:
    # rate toward the boundary <= gain * distance; outside (dist < 0) back off, at most at `backoff`
    return np.maximum(gain * dist, -backoff)


def joint_rows(state: ArmState, scale: F64, bounds: Bounds, gain: float, backoff: float) -> Rows:
    """Joint velocity box merged with the joint-position barrier, one row per joint and side.

    Merging keeps the problem small: each joint gets ``lo_i <= qd_i <= hi_i`` with
    ``hi_i = min(v_i, gain * (q_high - margin - q_i))`` and the label of whichever bound is tighter.
    """
    assert state.qd_map is not None
    M, c = state.qd_map
    n = M.shape[0]
    hi = np.full(n, np.inf)
    lo = np.full(n, -np.inf)
    khi = np.full(n, KIND_CODE["joint_velocity"])
    klo = khi.copy()
    if bounds.joint_velocity is not None:
        v = np.broadcast_to(bounds.joint_velocity, (n,))
        hi, lo = v.copy(), -v
    if bounds.joint_margin is not None and state.q is not None:
        assert state.q_low is not None and state.q_high is not None
        m = bounds.joint_margin
        up = _barrier_rhs(state.q_high - m - state.q, gain, backoff)
        down = -_barrier_rhs(state.q - state.q_low - m, gain, backoff)
        tighter_hi, tighter_lo = up < hi, down > lo
        khi = np.where(tighter_hi, KIND_CODE["joint_position"], khi)
        klo = np.where(tighter_lo, KIND_CODE["joint_position"], klo)
        hi, lo = np.minimum(hi, up), np.maximum(lo, down)
    keep_hi, keep_lo = np.isfinite(hi), np.isfinite(lo)
    A = np.vstack([M[keep_hi], -M[keep_lo]])
    b = np.concatenate([hi[keep_hi] - c[keep_hi], -lo[keep_lo] + c[keep_lo]])
    return Rows(A, b, np.concatenate([khi[keep_hi], klo[keep_lo]]).astype(np.int64))


def ee_speed_rows(state: ArmState, bound: F64) -> Rows:
    """Per-axis ``|v_j| <= s_j`` plus eight corner rows ``d . v <= min(s)``.

    The corner rows make the box a polyhedral bound on the norm: with both,
    ``||v|| <= 1.24 min(s)`` instead of ``sqrt(3) s`` for the box alone.
    """
    assert state.ee_map is not None
    E, e = state.ee_map
    s = np.broadcast_to(bound, (3,))
    D = CORNERS @ E
    A = np.vstack([E, -E, D])
    b = np.concatenate([s - e, s + e, np.full(8, s.min()) - CORNERS @ e])
    return kind_rows(A, b, "ee_speed")


def workspace_rows(state: ArmState, low: F64, high: F64, gain: float, backoff: float) -> Rows:
    """End effector inside the box: barrier rows per axis and side."""
    assert state.ee_map is not None
    E, e = state.ee_map
    p = state.ee_pos
    up = _barrier_rhs(high - p, gain, backoff)
    down = _barrier_rhs(p - low, gain, backoff)
    return kind_rows(np.vstack([E, -E]), np.concatenate([up - e, down + e]), "workspace")


def keepout_rows(state: ArmState, margin: float, gain: float, backoff: float) -> Rows:
    """Each site's sphere (``state.site_radius``) stays outside each box by ``margin``.

    The sites are the centres of bulky links, so the distance that counts is the
    site's distance minus its radius. Uses the box face that separates the site
    most (a supporting half-space of the convex box): the site's approach speed
    to that face is at most ``gain * (distance - margin - radius)``. Outside the
    corner regions this is exact; near an edge it is conservative, which is the
    safe side.
    """
    A, b = [], []
    radii = state.radii()
    for centre, half in state.boxes:
        for (pos, (S, s)), radius in zip(state.sites, radii, strict=True):
            rel = pos - centre
            sep = np.abs(rel) - half
            j = int(np.argmax(sep))
            sign = 1.0 if rel[j] >= 0 else -1.0
            # moving toward the box along axis j means -sign * v_j > 0
            A.append(-sign * S[j])
            dist = sep[j] - margin - radius
            b.append(float(_barrier_rhs(np.array(dist), gain, backoff)) + sign * s[j])
    if not A:
        return Rows.empty(0)
    return kind_rows(np.array(A), np.array(b), "keepout")


def contact_rows(state: ArmState, max_force: float, backoff: float) -> Rows:
    """No further push along a contact normal as the force nears its bound; back off above it.

    The allowed approach speed is ``CONTACT_APPROACH_SPEED * (1 - f / f_max)``:
    full speed at no force, zero at the bound, negative (retreat, at most
    ``backoff``) above it. The strongest ``MAX_CONTACT_ROWS`` contacts get a row.
    """
    if not state.contacts:
        return Rows.empty(0)
    strongest = sorted(state.contacts, key=lambda c: -c[0])[:MAX_CONTACT_ROWS]
    A, b = [], []
    for force, (N, nu) in strongest:
        allowed = max(CONTACT_APPROACH_SPEED * (1.0 - force / max_force), -backoff)
        A.append(N)
        b.append(allowed - float(nu))
    return kind_rows(np.array(A), np.array(b), "contact_force")


def build(state: ArmState, envelope: Envelope, scale: F64, bounds: Bounds | None = None) -> Rows:
    """All rows for one step, in the action's physical units (``u = scale * a``)."""
    bounds = envelope.bounds() if bounds is None else bounds
    k = len(scale)
    gain = min(
        envelope.barrier_gain, 0.9 / state.dt
    )  # gain * dt < 1: one step cannot cross a boundary
    jgain = min(envelope.joint_gain, 0.9 / state.dt)
    # back-off speed: what the ee may use to return inside after a tightening
    backoff = 0.5 * float(np.min(bounds.ee_speed)) if bounds.ee_speed is not None else 0.05
    jbackoff = (
        0.5 * float(np.min(bounds.joint_velocity)) if bounds.joint_velocity is not None else 0.2
    )
    parts = [
        kind_rows(np.vstack([np.eye(k), -np.eye(k)]), np.concatenate([scale, scale]), "action_box")
    ]
    if state.qd_map is not None and (
        bounds.joint_velocity is not None or bounds.joint_margin is not None
    ):
        parts.append(joint_rows(state, scale, bounds, jgain, jbackoff))
    if state.ee_map is not None:
        if bounds.ee_speed is not None:
            parts.append(ee_speed_rows(state, bounds.ee_speed))
        if bounds.workspace_low is not None and bounds.workspace_high is not None:
            parts.append(
                workspace_rows(state, bounds.workspace_low, bounds.workspace_high, gain, backoff)
            )
    if bounds.keepout_margin is not None and state.boxes and state.sites:
        parts.append(keepout_rows(state, bounds.keepout_margin, gain, backoff))
    if bounds.contact_force is not None and state.contacts:
        parts.append(contact_rows(state, bounds.contact_force, backoff))
    parts = [p for p in parts if len(p.b)]
    return Rows(
        np.vstack([p.A for p in parts]),
        np.concatenate([p.b for p in parts]),
        np.concatenate([p.kind for p in parts]),
    )


def margins(state: ArmState, bounds: Bounds) -> dict[str, float]:
    """Distance of the current state to each position-like bound (>= 0 inside), for ``info``."""
    out: dict[str, float] = {}
    if bounds.workspace_low is not None and bounds.workspace_high is not None:
        out["workspace"] = float(
            min(
                np.min(state.ee_pos - bounds.workspace_low),
                np.min(bounds.workspace_high - state.ee_pos),
            )
        )
    if bounds.keepout_margin is not None and state.boxes and state.sites:
        # the sphere around each site: its separation from the box less its radius
        radii = state.radii()
        seps = [
            float(np.max(np.abs(pos - c) - h)) - r
            for c, h in state.boxes
            for (pos, _), r in zip(state.sites, radii, strict=True)
        ]
        out["keepout"] = min(seps) - bounds.keepout_margin
    if bounds.joint_margin is not None and state.q is not None:
        assert state.q_low is not None and state.q_high is not None
        out["joint_position"] = float(
            min(np.min(state.q - state.q_low), np.min(state.q_high - state.q)) - bounds.joint_margin
        )
    if bounds.contact_force is not None:
        fmax = max((f for f, _ in state.contacts), default=0.0)
        out["contact_force"] = bounds.contact_force - fmax
    return out


def arm_state(kin: ArmKinematics) -> ArmState:
    """A MuJoCo arm's :class:`ArmState`, computed with MuJoCo's own Jacobians (the readable way)."""
    m, d = kin.model, kin.data
    dof = m.jnt_dofadr[kin.joints]

    def jac(point: F64, body: int) -> F64:
        J = np.zeros((3, m.nv))
        mujoco.mj_jac(m, d, J, None, point, body)
        return J[:, dof]

    def site_jac(site: int) -> F64:
        J = np.zeros((3, m.nv))
        mujoco.mj_jacSite(m, d, J, None, site)
        return J[:, dof]

    n = len(kin.joints)
    Je = site_jac(kin.ee_site)
    if kin.action_mode == "joint_velocity":
        M, c = np.eye(n), np.zeros(n)
    else:
        JJt = Je @ Je.T + kin.damping**2 * np.eye(3)
        M, c = Je.T @ np.linalg.solve(JJt, np.eye(3)), np.zeros(n)
    sites = []
    for s in kin.keepout_sites:
        S = site_jac(int(s))
        sites.append((d.site_xpos[s].copy(), (S @ M, S @ c)))
    contacts = []
    f6 = np.zeros(6)
    for i in range(d.ncon):
        con = d.contact[i]
        arm1, arm2 = kin.arm_geom[con.geom1], kin.arm_geom[con.geom2]
        if arm1 == arm2 or con.efc_address < 0:  # arm-arm or world-world: not a push on the world
            continue
        mujoco.mj_contactForce(m, d, i, f6)
        normal = con.frame[:3] if arm1 else -con.frame[:3]  # from the arm into the other body
        row = normal @ jac(con.pos, int(m.geom_bodyid[con.geom1 if arm1 else con.geom2]))
        contacts.append((abs(float(f6[0])), (row @ M, np.asarray(row @ c))))
    q = d.qpos[m.jnt_qposadr[kin.joints]].copy()
    return ArmState(
        dt=kin.dt,
        ee_pos=d.site_xpos[kin.ee_site].copy(),
        ee_map=(Je @ M, Je @ c),
        qd_map=(M, c),
        q=q,
        q_low=kin.q_low.copy(),
        q_high=kin.q_high.copy(),
        sites=sites,
        boxes=kin.box_list(),
        contacts=contacts,
        site_radius=[float(m.site_size[s, 0]) for s in kin.keepout_sites],
    )


def violation(rows: Rows, u: F64) -> float:
    """Largest ``A u - b`` over the rows (<= 0: the command respects every row)."""
    if len(rows.b) == 0:
        return -np.inf
    return float(np.max(rows.A @ u - rows.b))
