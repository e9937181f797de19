"""TOML task specs -> frozen, validated pydantic models.

Every file loads through :func:`load_model`, so a malformed file, a missing or
unknown key, or an out-of-range value raises :class:`SpecError` naming the file,
the key path and what was allowed — never a bare ``KeyError`` later in a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from safebot.config import Frozen, SpecError, load_model, parse_model, read_toml  # re-exported

__all__ = [
    "Frozen",
    "SpecError",
    "TaskSpec",
    "UncertaintySection",
    "load_model",
    "load_task",
    "merge_tables",
    "parse_model",
    "read_toml",
]

# --------------------------------------------------------------------------- task spec

PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Vec3 = Annotated[tuple[Finite, Finite, Finite], Field()]
ScalarOrList = PositiveFloat | list[PositiveFloat]


class TaskInfo(Frozen):
    """``[task]``: what the task is."""

    name: str
    kind: Literal["reach", "push", "press"]
    description: str = ""


class RobotSection(Frozen):
    """``[robot]``: the scene, how actions are interpreted, and the control rate."""

    scene: str = Field(description="MJCF scene, relative to assets/ (e.g. 'panda/scene_reach.xml')")
    action_mode: Literal["joint_velocity", "ee_velocity"] = "joint_velocity"
    observation: Literal["full", "cartesian"] = Field(
        "full",
        description=(
            "'full': joint positions and velocities, end-effector position and velocity, task state; "
            "'cartesian': no joint state, so an ee_velocity policy is not tied to one arm's joints"
        ),
    )
    control_hz: PositiveFloat = 25.0
    substeps: Annotated[int, Field(ge=1, le=1000)] = 20
    max_episode_steps: Annotated[int, Field(ge=1, le=100_000)] = 50
    home: list[Finite] = Field(
        default=[0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785],
        description="arm joint configuration at reset (rad), one per joint of the scene's arm "
        "(checked against the scene when the env is built)",
    )
    home_noise: NonNegFloat = Field(0.05, description="uniform joint noise at reset (rad)")

    @model_validator(mode="after")
    def _cartesian_needs_ee(self) -> RobotSection:
        if self.observation == "cartesian" and self.action_mode != "ee_velocity":
            raise ValueError(
                "observation = 'cartesian' needs action_mode = 'ee_velocity' "
                "(a joint-velocity policy has to see the joints it commands)"
            )
        return self


class GoalSection(Frozen):
    """``[goal]``: where goals are sampled and when a goal counts as reached."""

    low: Vec3
    high: Vec3
    threshold: PositiveFloat = Field(0.03, description="success distance (m)")
    # press only: the force band (N) to hold, and for how many consecutive steps
    force_low: NonNegFloat = 5.0
    force_high: NonNegFloat = 15.0
    hold_steps: Annotated[int, Field(ge=1)] = 5

    @model_validator(mode="after")
    def _ordered(self) -> GoalSection:
        for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
            if lo > hi:
                raise ValueError(f"low[{i}]={lo} > high[{i}]={hi}")
        if self.force_low > self.force_high:
            raise ValueError(f"force_low={self.force_low} > force_high={self.force_high}")
        return self


class RewardSection(Frozen):
    """``[reward]``: sparse (-1 until success, 0 after: HER-friendly) or dense (-distance)."""

    type: Literal["sparse", "dense"] = "sparse"


class CostSection(Frozen):
    """``[cost]``: what counts as harm (docs/design.md, rule 5). Free-space speed never does.

    A step's cost term is 1 when any of its substeps crossed a threshold below. Contact
    forces are the summed normal force of one contact class in one substep (2 ms: an
    impact's peak, not a step average).
    """

    arm_table_force: PositiveFloat = Field(
        60.0, description="N: arm on the table: a hand striking a surface"
    )
    arm_object_force: PositiveFloat = Field(
        60.0,
        description="N: arm on a task object (the block, the plate): an impact on what it handles",
    )
    object_table_force: PositiveFloat = Field(
        50.0, description="N: a task object on the table: a dropped or slammed object"
    )
    arm_obstacle_force: PositiveFloat = Field(
        20.0, description="N: arm on a keep-out geom, counted even with obstacle_contact = false"
    )
    joint_limit_tolerance: PositiveFloat = Field(0.01, description="rad from a position limit")
    obstacle_contact: bool = Field(True, description="any arm contact with a keep-out geom")
    object_escape_margin: PositiveFloat = Field(
        0.1,
        description="Push: m beyond the [goal] region in x or y at which the block counts as "
        "knocked out of the workspace (also harm: falling below the table top)",
    )
    plate_damage_force: PositiveFloat = Field(
        60.0, description="Press: N of arm force on the plate that damages it"
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if "safe_ee_speed" in v:
                raise ValueError(
                    "safe_ee_speed was removed: free-space speed is not harm (docs/design.md, "
                    "rule 5); speed is reported as info['speed/ee']"
                )
            if "safe_contact_force" in v:
                raise ValueError(
                    "safe_contact_force was split per contact class: arm_table_force, "
                    "arm_object_force, object_table_force, arm_obstacle_force (N, > 0)"
                )
        return v


Range = Annotated[tuple[NonNegFloat, NonNegFloat], Field()]


class UncertaintySection(Frozen):
    """``[uncertainty]``: what the controller does not know exactly (docs/design.md, rule 6).

    Sampled once per episode from the env's ``np_random``. Absent table: no error at all.
    """

    keepout_sigma: NonNegFloat = Field(
        0.0,
        description="m: std of the per-axis Gaussian offset between each believed keep-out "
        "box centre (the shield's map) and the true geom",
    )
    surface_sigma: NonNegFloat = Field(
        0.0,
        description="m: std of the Gaussian offset of the true table (and what stands on it) "
        "from its believed height z = 0, the height the workspace floor and the goals assume",
    )
    max_sigmas: PositiveFloat = Field(
        3.0,
        description="offsets are truncated at this many standard deviations (a perception "
        "system reports gross errors as failures, not as positions)",
    )
    object_mass: Range | None = Field(
        None, description="kg: [low, high] of the task object's uniformly sampled mass"
    )
    object_friction: Range | None = Field(
        None, description="[low, high] of the task object's uniformly sampled sliding friction"
    )

    @model_validator(mode="after")
    def _ordered(self) -> UncertaintySection:
        for name in ("object_mass", "object_friction"):
            r = getattr(self, name)
            if r is not None and not 0.0 < r[0] <= r[1]:
                raise ValueError(f"{name} = {list(r)}: need 0 < low <= high")
        return self

    @property
    def declared(self) -> bool:
        return bool(
            self.keepout_sigma
            or self.surface_sigma
            or self.object_mass is not None
            or self.object_friction is not None
        )


class RangeLimit(Frozen):
    """A limit whose bound loosens from ``start`` up to the hard ``cap``."""

    start: ScalarOrList
    cap: ScalarOrList


class MarginLimit(Frozen):
    """A limit whose margin shrinks from ``start`` down to the hard ``cap`` (the smallest margin)."""

    start: NonNegFloat
    cap: NonNegFloat


class WorkspaceLimit(Frozen):
    """End effector stays inside a box that grows from ``start`` to ``cap``."""

    start_low: Vec3
    start_high: Vec3
    cap_low: Vec3
    cap_high: Vec3


class KeepoutLimit(Frozen):
    """Sites stay outside the named box geoms by a margin that shrinks from start to cap."""

    geoms: list[str] = Field(min_length=1)
    sites: list[str] = Field(default_factory=lambda: ["ee_site"], min_length=1)
    start: NonNegFloat = 0.08
    cap: NonNegFloat = 0.02


class BarrierLimit(MarginLimit):
    """Joint position margin with the barrier gain (1/s) of the rate limit toward it."""

    gain: PositiveFloat = 5.0


class LimitsSection(Frozen):
    """``[limits]``: every limit the shield may enforce; absent ones are not enforced."""

    joint_velocity: RangeLimit | None = None
    ee_speed: RangeLimit | None = None
    workspace: WorkspaceLimit | None = None
    keepout: KeepoutLimit | None = None
    joint_position: BarrierLimit | None = None
    contact_force: RangeLimit | None = None
    barrier_gain: PositiveFloat = Field(
        5.0,
        description="1/s: allowed approach rate to a position-like boundary per metre of distance",
    )


class TrainSection(Frozen):
    """``[train]``: learner defaults for this task (the CLI can override algo, steps, seed, n_envs).

    SAC runs with HER on these goal-conditioned tasks; PPO uses the on-policy keys.
    """

    algo: Literal["sac", "ppo"] = "sac"
    backend: Literal["torch", "jax"] = Field(
        "torch",
        description=(
            "SAC's implementation: SB3 (torch) or SBX (JAX, jit-compiled updates; about 3x the "
            "steps per second on Reach, docs/benchmarks.md). PPO is always SB3's (torch); "
            "export is TorchScript either way"
        ),
    )
    total_steps: Annotated[int, Field(ge=1)] = 20_000
    n_envs: Annotated[int, Field(ge=1, le=64)] = 1
    seed: Annotated[int, Field(ge=0)] = 0
    torch_threads: Annotated[int, Field(ge=1, le=64)] = 1
    net_arch: list[Annotated[int, Field(ge=1)]] = Field(default=[256, 256], min_length=1)
    learning_rate: PositiveFloat = 1e-3
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    batch_size: Annotated[int, Field(ge=1)] = 256
    # SAC
    buffer_size: Annotated[int, Field(ge=1)] = 200_000
    learning_starts: Annotated[int, Field(ge=0)] = 1_000
    train_freq: Annotated[int, Field(ge=1)] = 1
    gradient_steps: Annotated[int, Field(ge=1)] = 1
    ent_coef: (
        PositiveFloat | Annotated[str, Field(pattern=r"^auto(_[0-9]*\.?[0-9]+(e-?[0-9]+)?)?$")]
    ) = Field(
        "auto",
        description=(
            "SAC entropy coefficient: a number, 'auto' (learned, starting at 1) or "
            "'auto_<start>' (learned, starting at <start>)"
        ),
    )
    her: bool = True
    her_goals: Annotated[int, Field(ge=1)] = 4
    # PPO
    n_steps: Annotated[int, Field(ge=2)] = 1024
    n_epochs: Annotated[int, Field(ge=1)] = 10
    log_std_init: Annotated[float, Field(ge=-5.0, le=1.0)] = Field(
        0.0,
        description=(
            "PPO: the Gaussian policy's initial log standard deviation in normalised action "
            "units (SB3's default 0: std 1, as wide as the whole action range)"
        ),
    )
    # envelope and evaluation
    observe_width: bool = Field(True, description="append the width per limit to the observation")
    normalize_obs: bool = Field(
        False,
        description=(
            "normalise observations by running mean and std (SB3 VecNormalize); the statistics "
            "are saved with every checkpoint and applied by eval, render and export"
        ),
    )
    correction_penalty: NonNegFloat = Field(
        0.0, description="reward minus this times the shield's correction (normalised units)"
    )
    eval_every: Annotated[int, Field(ge=1)] = Field(
        2_000, description="training steps between evaluations"
    )
    eval_episodes: Annotated[int, Field(ge=1)] = Field(
        10, description="held-out episodes per evaluation"
    )
    checkpoint_every: Annotated[int, Field(ge=1)] = 5_000
    save_replay_buffer: bool = True
    # the reward constraint (safebot.modes.RewardConstraint; --constraint overrides it) and the
    # Lagrangian's dual ascent (safebot.train.lagrangian)
    constraint: Literal["none", "penalty", "lagrangian"] = Field(
        "none",
        description=(
            "what the training reward subtracts for harm: nothing, a fixed penalty "
            "(--cost-penalty), or a learned Lagrange multiplier"
        ),
    )
    cost_limit: NonNegFloat = Field(
        1.0,
        description=(
            "lagrangian: the allowed harm per training episode (sum of info['cost']); "
            "lambda grows while the recent episodes' mean harm is above it"
        ),
    )
    lagrangian_lr: PositiveFloat = Field(
        0.01,
        description="lagrangian: dual ascent step, lambda += lr * (mean episode harm - cost_limit)",
    )
    lambda_init: NonNegFloat = Field(0.0, description="lagrangian: lambda at the start of a run")
    # learning from the scripted controllers (safebot.scripted), SAC only
    demo_episodes: Annotated[int, Field(ge=0)] = Field(
        0,
        description=(
            "scripted episodes run through the shield at the start width and put in the "
            "replay buffer before learning"
        ),
    )
    bc_weight: NonNegFloat = Field(
        0.0,
        description="weight of a behaviour-cloning loss on the demonstrations in the actor update",
    )
    bc_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="training steps over which bc_weight decays linearly to 0"
    )
    bc_pretrain: Annotated[int, Field(ge=0)] = Field(
        0, description="behaviour-cloning gradient steps on the actor before learning starts"
    )
    critic_warmup: Annotated[int, Field(ge=0)] = Field(
        0,
        description=(
            "SAC: env steps at the start of learning during which only the critics learn "
            "(the actor and the entropy coefficient keep their pretrained values)"
        ),
    )

    @model_validator(mode="after")
    def _demos_need_sac(self) -> TrainSection:
        uses = (
            self.demo_episodes > 0
            or self.bc_weight > 0
            or self.bc_pretrain > 0
            or self.critic_warmup > 0
        )
        if uses and self.algo != "sac":
            raise ValueError(
                "demo_episodes / bc_weight / bc_pretrain / critic_warmup need algo = 'sac' "
                "(demonstrations go into an off-policy replay buffer)"
            )
        if (self.bc_weight > 0 or self.bc_pretrain > 0) and self.demo_episodes == 0:
            raise ValueError("bc_weight / bc_pretrain need demo_episodes > 0 (nothing to clone)")
        return self


class TaskSpec(Frozen):
    """One task: ``tasks/<name>.toml``."""

    task: TaskInfo
    robot: RobotSection
    goal: GoalSection
    reward: RewardSection = RewardSection()
    cost: CostSection = CostSection()
    uncertainty: UncertaintySection = UncertaintySection()
    limits: LimitsSection = LimitsSection()
    train: TrainSection = TrainSection()
    scheduler: Any = Field(
        default_factory=lambda: {"kind": "competence"},
        validate_default=True,
        description="[scheduler] table: kind = static | linear | competence | pi, plus its settings",
    )
    source: str = Field("<memory>", exclude=True)

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler(cls, v: Any) -> Any:
        # imported here: safebot.schedulers builds its configs on safebot.config.Frozen
        from safebot.schedulers import parse_scheduler_config

        return v if isinstance(v, Frozen) else parse_scheduler_config(v)

    @model_validator(mode="after")
    def _her_has_whole_episodes(self) -> TaskSpec:
        t = self.train
        if t.algo == "sac" and t.her and t.demo_episodes == 0:
            if t.learning_starts < self.robot.max_episode_steps:
                raise ValueError(
                    f"train.learning_starts ({t.learning_starts}) < robot.max_episode_steps "
                    f"({self.robot.max_episode_steps}): HER samples from finished episodes, so "
                    "learning cannot start before the first one ends (or set demo_episodes)"
                )
        return self

    @model_validator(mode="after")
    def _limits_consistent(self) -> TaskSpec:
        lim = self.limits
        for name in ("joint_velocity", "ee_speed", "contact_force"):
            rl: RangeLimit | None = getattr(lim, name)
            if rl is None:
                continue
            start, cap = _as_list(rl.start), _as_list(rl.cap)
            if len(start) != len(cap) and 1 not in (len(start), len(cap)):
                raise ValueError(f"limits.{name}: start has {len(start)} values, cap {len(cap)}")
            n = max(len(start), len(cap))
            for i in range(n):
                s, c = start[i % len(start)], cap[i % len(cap)]
                if c < s:
                    raise ValueError(
                        f"limits.{name}: cap {c} < start {s} (index {i}); the cap is the loosest bound"
                    )
        for name in ("keepout", "joint_position"):
            ml = getattr(lim, name)
            if ml is not None and ml.cap > ml.start:
                raise ValueError(
                    f"limits.{name}: cap margin {ml.cap} > start margin {ml.start}; the cap is the smallest margin"
                )
        ko, sigma = lim.keepout, self.uncertainty.keepout_sigma
        if ko is not None and sigma > 0 and ko.start < 3.0 * sigma:
            raise ValueError(
                f"limits.keepout.start = {ko.start} m is below 3 x uncertainty.keepout_sigma "
                f"({3.0 * sigma:g} m): the start envelope must cover the map's error with room"
            )
        ws = lim.workspace
        if ws is not None:
            for i in range(3):
                if not (ws.cap_low[i] <= ws.start_low[i] < ws.start_high[i] <= ws.cap_high[i]):
                    raise ValueError(
                        f"limits.workspace axis {i}: need cap_low <= start_low < start_high <= cap_high, got "
                        f"{ws.cap_low[i]}, {ws.start_low[i]}, {ws.start_high[i]}, {ws.cap_high[i]}"
                    )
        return self

    @property
    def control_dt(self) -> float:
        return 1.0 / self.robot.control_hz


def _as_list(v: float | list[float]) -> list[float]:
    return list(v) if isinstance(v, list) else [float(v)]


def load_task(path_or_name: str | Path) -> TaskSpec:
    """Load a task spec from a path or a shipped name (``"reach"`` -> ``tasks/reach.toml``).

    A file may start with ``extends = "<task name or path>"``: it is then that
    task with this file's keys on top (:func:`merge_tables`); a relative path is
    looked up beside the extending file first.
    """
    from safebot.resources import resolve

    try:
        path = resolve("tasks", path_or_name)
    except FileNotFoundError as err:
        raise SpecError(str(err)) from None
    spec = parse_model(_task_tables(path, ()), TaskSpec, str(path))
    return spec.model_copy(update={"source": str(path)})


def _task_tables(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The tables of the task file ``path`` with what it ``extends`` merged beneath."""
    from safebot.resources import resolve

    data = read_toml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise SpecError(f"{path}: extends must be a task name or path, got {base!r}")
    beside = path.parent / base
    try:
        base_path = beside.resolve() if beside.is_file() else resolve("tasks", base)
    except FileNotFoundError as err:
        raise SpecError(f"{path}: extends: {err}") from None
    if base_path in (*chain, path):
        names = " -> ".join(p.name for p in (*chain, path, base_path))
        raise SpecError(f"{path}: extends forms a cycle: {names}")
    return merge_tables(_task_tables(base_path, (*chain, path)), data)


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, table by table: keys ``over`` gives win, the rest stay.

    A table with a ``kind`` (``[scheduler]``) of another kind replaces the base's
    whole table, since the other kind's keys would not be valid in it.

    Example:
        >>> merge_tables({"train": {"algo": "sac", "seed": 1}}, {"train": {"algo": "ppo"}})
        {'train': {'algo': 'ppo', 'seed': 1}}
    """
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        replaces = isinstance(value, dict) and value.get("kind", None) not in (
            None,
            below.get("kind") if isinstance(below, dict) else None,
        )
        if isinstance(value, dict) and isinstance(below, dict) and not replaces:
            out[key] = merge_tables(below, value)
        else:
            out[key] = value
    return out
