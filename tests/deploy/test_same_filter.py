"""Training and deployment run the same safety filter (docs/design.md, rule 7).

States recorded from a shielded training env are fed to the deploy side's
:class:`~safebot.deploy.run.ShieldedPolicy` (a kinematic model of the robot, the
bundle's envelope intersected with the robot's published limits) with the same
actions: the filter's commands must be identical, bit for bit (the joint velocities they
map to differ by rounding only: the env maps with NumPy, deploy with the filter's own map).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from safebot.deploy.bundle import Bundle
from safebot.deploy.profiles import load_profile
from safebot.deploy.run import ShieldedPolicy
from safebot.envs import make_task_env
from safebot.shield import Shield


def test_training_and_deploy_filters_give_identical_commands(
    reach_bundle: Callable[[str], Bundle],
) -> None:
    bundle = reach_bundle("full")
    policy = ShieldedPolicy(bundle, load_profile("franka_panda"))
    # at the bundle's width the Panda's published limits do not bind: the same bounds
    theirs = bundle.shield.envelope().bounds().__dict__
    for key, value in policy.envelope.bounds().__dict__.items():
        np.testing.assert_array_equal(value, theirs[key], err_msg=key)

    base = make_task_env(bundle.spec_for_kinematics())  # the bundle's Reach task, simulated
    train = Shield(base, bundle.shield.envelope())
    train.set_width(bundle.shield.width)
    np.testing.assert_array_equal(train.filter.scale, policy.scale)
    rng = np.random.default_rng(0)
    train.reset(seed=0)
    compared, intervened = 0, 0
    for i in range(300):
        a = rng.uniform(-1.0, 1.0, 3) if i % 3 else np.array([1.0, 0.0, -0.5])
        q, dq = base.physics.qpos(), base.physics.qvel()
        contact_free = base.data.ncon == 0  # deploy's kinematic model sees no contacts
        _, _, _, truncated, info = train.step(a)
        if contact_free:
            policy.observation(q, dq)
            qd, status, was_changed, _ = policy.project(np.clip(a, -1, 1) * policy.scale)
            assert policy.last is not None
            # the filter's command: bit for bit the same
            np.testing.assert_array_equal(policy.last.u, train.last_projected)
            assert policy.last.active == tuple(info["shield/active"])
            # the joint command through each side's action map (numba there, NumPy in the env)
            np.testing.assert_allclose(qd, info["commanded_qvel"], rtol=1e-12, atol=1e-15)
            assert (status == 0) == (info["shield/status"] == "ok")
            assert was_changed == info["shield/intervened"]
            compared += 1
            intervened += was_changed
        if truncated:
            train.reset(seed=i)
    assert compared > 200
    assert intervened > 20, "the filter never acted: the comparison would not notice a difference"
