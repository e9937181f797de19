"""Universal Robots deploy path: ur_rtde 1.6.5 against a real UR or the RTDE stub.

* :mod:`safebot.deploy.ur.rtde`: RTDE wire facts and a pure-Python pre-flight probe;
* :mod:`safebot.deploy.ur.stub`: a UR5e controller stub (RTDE 30004, dashboard
  29999, script port 30003, ur_rtde's register handshake) over the PyBullet plant;
* :mod:`safebot.deploy.ur.client`: ``run_loop`` through ur_rtde ``speedJ`` at 500 Hz.

See ``docs/deploy.md`` (*UR: ur_rtde and RTDE*).
"""
