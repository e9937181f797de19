"""``Shield``: the Gymnasium wrapper around the safety filter.

One job: the action the agent sends becomes the filter's safe command
(:class:`~safebot.shield.filter.SafetyFilter`), and ``info`` says what the filter did.
The policy's action space never changes: actions in [-1, 1] scale to the *hard
caps*; the width moves only the rows (docs/design.md, rules 1-3).

Example:
    >>> env = Shield(safebot.envs.make("reach"))               # envelope from the task's [limits]
    >>> env = Shield(gym.make("FetchPush-v4"), Envelope({"ee_speed": Limit.make("ee_speed", 0.3, 1.2)}))
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from safebot.envelope import Envelope, EnvelopeError
from safebot.shield.filter import SafetyFilter
from safebot.shield.views import ArmView, arm_view


class Shield(gym.Wrapper[Any, np.ndarray, Any, np.ndarray], gym.utils.RecordConstructorArgs):
    """Project each action onto the commands that respect the envelope.

    Args:
        env: a safebot task, a Fetch task, or any env with ``kinematics`` or an ``arm`` adapter.
        envelope: the limits; default: the safebot task's ``[limits]`` (``env.task.limits``).
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
            task = getattr(env.unwrapped, "task", None)
            if task is None:
                raise EnvelopeError("Shield needs an envelope for envs that are not safebot tasks")
            envelope = Envelope.from_spec(task.limits)
        n = self.env.action_space.shape[0]  # type: ignore[index]
        if self.arm.scale.shape != (n,):
            raise TypeError(f"adapter scale has shape {self.arm.scale.shape}, action space ({n},)")
        self.filter = SafetyFilter(envelope, self.arm, enforce=enabled)
        self.envelope = envelope
        self.scheduler = scheduler
        self.observe_width = observe_width
        self._width_key: tuple[Any, ...] = ()
        self._width_cache: tuple[float, np.ndarray] = (0.0, np.zeros(0))
        self.last_action = np.zeros(n)  # raw (physical) and projected, for overlays
        self.last_projected = np.zeros(n)
        if observe_width:
            self.observation_space = self._width_space(self.env.observation_space)

    def _width_space(self, obs_space: gym.Space[Any]) -> spaces.Dict:
        if not isinstance(obs_space, spaces.Dict) or "observation" not in obs_space.spaces:
            raise TypeError(
                "observe_width needs a Dict observation space with an 'observation' entry"
            )
        inner = obs_space.spaces["observation"]
        assert isinstance(inner, spaces.Box)
        k = len(self.envelope.kinds)
        low = np.concatenate([inner.low, np.zeros(k)])
        high = np.concatenate([inner.high, np.ones(k)])
        box = spaces.Box(low, high, dtype=inner.dtype)  # type: ignore[arg-type]
        return spaces.Dict({**obs_space.spaces, "observation": box})

    # ------------------------------------------------------------------ width
    @property
    def enabled(self) -> bool:
        return self.filter.enforce

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
        res = self.filter.filter(action)
        self.last_action, self.last_projected = res.u_raw, res.u
        obs, reward, terminated, truncated, info = self.env.step(res.u / self.filter.scale)
        info["shield/intervened"] = res.intervened
        info["shield/correction"] = res.correction
        info["shield/active"] = list(res.active)
        info["shield/status"] = res.status
        info["shield/width"] = self._widths()[0]
        for kind, margin in res.margins.items():
            info[f"shield/margin/{kind}"] = margin
        return self._augment(obs), float(reward), terminated, truncated, info

    def _augment(self, obs: Any) -> Any:
        if not self.observe_width:
            return obs
        return {**obs, "observation": np.concatenate([obs["observation"], self._widths()[1]])}

    def _widths(self) -> tuple[float, np.ndarray]:
        """(mean width, width per limit kind), recomputed only when the envelope changes."""
        env = self.envelope
        if self._width_key != (env, env.revision):
            w = env.width
            self._width_cache = (env.mean_width(), np.array([w[k] for k in env.kinds]))
            self._width_key = (env, env.revision)
        return self._width_cache
