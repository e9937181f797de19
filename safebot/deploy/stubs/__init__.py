"""Controller stubs: a separate process per stub, loopback UDP, a PyBullet plant.

* :mod:`.controller`: :class:`ControllerCore`, the checks / faults / modes (no I/O).
* :mod:`.plant`: :class:`PybulletPlant`, the arm in a private PyBullet world.
* :mod:`.server`: the real-time loop, ``python -m safebot.deploy.stubs.server``,
  and :class:`StubProcess` to spawn one from Python.
"""
