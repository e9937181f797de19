"""What both vendor stubs share: the controller's checks and a PyBullet plant (no I/O).

* :mod:`.controller`: :class:`ControllerCore`, the checks / faults / modes.
* :mod:`.plant`: :class:`PybulletPlant`, the arm in a private PyBullet world.

The stubs themselves speak the vendors' protocols: :mod:`safebot.deploy.franka.stub`
(libfranka, protocol version 10) and :mod:`safebot.deploy.ur.stub` (RTDE, dashboard,
script port).
"""
