"""Franka deploy through libfranka's own protocol: pylibfranka client, protocol-v10 stub.

* :mod:`safebot.deploy.franka.protocol`: the wire structs (libfranka-common, version 10).
* :mod:`safebot.deploy.franka.stub`: the stub server process (``safebot stub fr3``).
* :mod:`safebot.deploy.franka.client`: :func:`run_loop` through pylibfranka.

Import the submodules directly: the stub imports pybullet, the client pylibfranka.
"""
