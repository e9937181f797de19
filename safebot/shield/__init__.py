"""The shield: one safety filter for training, evaluation, rendering and deployment.

* :mod:`~safebot.shield.filter` -- :class:`SafetyFilter`, the only filter
  (``filter(action) -> FilterResult``);
* :mod:`~safebot.shield.wrapper` -- :class:`Shield`, its Gymnasium wrapper;
* :mod:`~safebot.shield.views` -- arm adapters (:class:`MujocoArmView` for any arm with an
  :class:`ArmKinematics`, :class:`FetchArmView`);
* :mod:`~safebot.shield.rows` -- one numba row function per limit kind, in one registry;
* :mod:`~safebot.shield.kinematics` and :mod:`~safebot.shield.packed` -- the arm and its
  state as the numba code reads them.

See docs/design.md for the data flow of one step.
"""

from safebot.shield.filter import FilterResult, SafetyFilter
from safebot.shield.kinematics import ArmKinematics
from safebot.shield.packed import MARGIN_KINDS, ROW_KINDS, ArmState
from safebot.shield.views import ArmView, FetchArmView, MujocoArmView, arm_view
from safebot.shield.wrapper import Shield

__all__ = [
    "MARGIN_KINDS",
    "ROW_KINDS",
    "ArmKinematics",
    "ArmState",
    "ArmView",
    "FetchArmView",
    "FilterResult",
    "MujocoArmView",
    "SafetyFilter",
    "Shield",
    "arm_view",
]
