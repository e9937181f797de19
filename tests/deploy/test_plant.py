"""The PyBullet plant: velocity tracking, contact torques, and a stub-side collision reflex."""

from __future__ import annotations

import numpy as np
import pytest

from safebot.deploy.profiles import load_profile
from safebot.deploy.ratelimit import RateLimiter
from safebot.deploy.state import Command, CommandFlag, RobotMode, mask_to_flags
from safebot.deploy.stubs.controller import ControllerCore
from safebot.deploy.stubs.plant import Box, PybulletPlant

# A box under the Franka hand / the UR tool (home poses), top at z = 0.4 / 0.35 m.
OBSTACLES = {
    "franka_fr3": Box((0.5, 0.0, 0.2), (0.1, 0.3, 0.2)),
    "ur5e": Box((0.31, 0.0, 0.2), (0.1, 0.3, 0.15)),
}


def drive(
    name: str, target: np.ndarray, cycles: int, obstacles: tuple[Box, ...] = ()
) -> tuple[ControllerCore, PybulletPlant]:
    prof = load_profile(name)
    plant = PybulletPlant(prof, obstacles=obstacles)
    core = ControllerCore(prof)
    lim = RateLimiter(prof)
    for k in range(cycles):
        qd = lim(target, core.dq_d, core.ddq_d)
        core.command(Command(k + 1, 0, k, CommandFlag.NONE, 0.0, qd), k * prof.dt, last_state_seq=k)
        plant.step(core.target)
        core.observe(plant.read())
        if core.errors:
            break
    return core, plant


@pytest.mark.parametrize("name", ["franka_fr3", "ur5e"])
def test_plant_tracks_commanded_velocity_without_contact(name: str) -> None:
    prof = load_profile(name)
    target = 0.2 * np.asarray(prof.limits.joint.velocity) * np.where(np.arange(prof.dof) % 2, 1, -1)
    core, plant = drive(name, target, 400)
    try:
        ps = plant.read()
        assert core.errors == 0, mask_to_flags(core.errors)
        np.testing.assert_allclose(ps.dq, core.target, atol=0.02)
        assert not ps.tau_ext.any() and not ps.wrench.any()
    finally:
        plant.close()


@pytest.mark.parametrize("name", ["franka_fr3", "ur5e"])
def test_pushing_into_an_obstacle_trips_a_collision_reflex(name: str) -> None:
    target = np.zeros(load_profile(name).dof)
    target[1] = 0.5  # shoulder: the tool goes down into the box
    core, plant = drive(name, target, 2500, (OBSTACLES[name],))
    try:
        flags = mask_to_flags(core.errors)
        assert {"cartesian_reflex", "joint_reflex"} & set(flags), flags
        assert core.mode in (RobotMode.REFLEX, RobotMode.PROTECTIVE_STOP)
    finally:
        plant.close()


def test_same_motion_without_obstacle_is_clean() -> None:
    target = np.zeros(7)
    target[1] = 0.5
    core, plant = drive("franka_fr3", target, 600)  # reaches the box's height, no box
    try:
        assert core.errors == 0, mask_to_flags(core.errors)
    finally:
        plant.close()


def test_box_parse() -> None:
    assert Box.parse("1,2,3,0.1,0.2,0.3") == Box((1, 2, 3), (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="x,y,z,hx,hy,hz"):
        Box.parse("1,2,3")
