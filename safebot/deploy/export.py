"""``safebot export RUN_DIR --out BUNDLE``: a trained run -> a self-contained deploy bundle.

The policy becomes TorchScript of the SB3 policy's *deterministic* forward on a
flat float32 observation:

* SAC: ``tanh(mu(latent_pi(x)))``, unscaled to the action bounds (what
  ``model.predict(obs, deterministic=True)`` returns);
* PPO: the Gaussian's mean ``action_net(policy_net(x))``, clipped to the action bounds.

A run trained with ``[train] normalize_obs`` carries its observation statistics
inside the module (``(x - mean) / sqrt(var + eps)``, clipped, before the
network), so the bundle's input stays the raw observation.

``x`` is the Dict observation concatenated in stable-baselines3's own order:
``CombinedExtractor`` flattens each key of the (sorted) Dict space and
concatenates them in that order — ``achieved_goal, desired_goal, observation``
for safebot's tasks. The order and sizes are written to ``policy.json``; the
export checks the TorchScript against ``model.predict`` on random observations
before it writes anything.

The model is the run's last one, or with ``which="best"`` (``safebot export``'s
default) its best held-out-evaluated one; the shield goes in at the width the
run ended at (``summary.json``), or for the best model at the width of its
evaluation, with the
envelope's start and cap values, the action scale and mode and the control
rate; the run's ``config.toml``, the package versions and the task's scene are
copied in. See :mod:`safebot.deploy.bundle` for the layout.
"""

# no `from __future__ import annotations`: TorchScript reads the class annotations below
import contextlib
import platform
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from safebot.deploy.bundle import (
    CONFIG_FILE,
    Bundle,
    BundleError,
    PolicyInfo,
    ShieldConfig,
    load_bundle,
    write_bundle,
)
from safebot.resources import resolve

#: largest |TorchScript - SB3| accepted by the export's self-check
EXPORT_TOLERANCE = 1e-5


class ExportError(ValueError):
    """A run cannot be exported (unsupported policy, failed self-check); one line."""


@dataclass(frozen=True)
class ExportResult:
    bundle: Bundle
    max_abs_error: float
    #: the model exported ("best" or "last"; also ``[run] policy`` of the bundle's config.toml)
    which: str = "last"


def _check_flatten_extractor(extractor: Any, where: str) -> list[str]:
    """The keys of a ``CombinedExtractor`` that only flattens 1-D boxes (else ExportError)."""
    from stable_baselines3.common.torch_layers import CombinedExtractor

    if not isinstance(extractor, CombinedExtractor):
        raise ExportError(
            f"{where}: features extractor {type(extractor).__name__} is not supported "
            "(export handles MultiInputPolicy's CombinedExtractor over flat boxes)"
        )
    for key, sub in extractor.extractors.items():
        if not isinstance(sub, torch.nn.Flatten):
            raise ExportError(
                f"{where}: observation key {key!r} goes through {type(sub).__name__}, not Flatten"
            )
    return list(extractor.extractors.keys())


def policy_module(model: Any) -> tuple[Any, PolicyInfo]:
    """The deterministic forward of an SB3 SAC/PPO ``MultiInputPolicy`` as a plain ``nn.Module``.

    Returns:
        ``(module, info)``: ``module(x)`` with ``x`` float32 ``(batch, info.input_size)``
        returns the actions ``model.predict(obs, deterministic=True)`` would.

    Raises:
        ExportError: another algorithm, policy layout or observation space.
    """
    from gymnasium import spaces
    from stable_baselines3 import PPO, SAC

    from safebot.train import NormalizedModel

    norm = None
    if isinstance(model, NormalizedModel):  # a normalize_obs run: statistics go into the module
        norm, model = model, model.model
    obs_space = model.observation_space
    act_space = model.action_space
    if not isinstance(obs_space, spaces.Dict):
        raise ExportError(f"observation space {type(obs_space).__name__} is not a Dict")
    if not isinstance(act_space, spaces.Box) or len(act_space.shape) != 1:
        raise ExportError(f"action space {act_space} is not a flat Box")
    low = np.asarray(act_space.low, dtype=np.float64)
    high = np.asarray(act_space.high, dtype=np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ExportError("action space bounds must be finite")
    policy = model.policy
    if _is_jax_sac(model):
        keys = list(obs_space.spaces.keys())  # SBX concatenates the Dict in its key order
        module: nn.Module = _SquashedMean(*_jax_actor_layers(policy), low, high)
        algo = "sac"
    elif isinstance(model, SAC):
        actor = policy.actor
        keys = _check_flatten_extractor(actor.features_extractor, "SAC actor")
        module = _SquashedMean(actor.latent_pi, actor.mu, low, high)
        algo = "sac"
    elif isinstance(model, PPO):
        if policy.use_sde or policy.squash_output:
            raise ExportError("PPO with gSDE / squashed output is not supported")
        extractor = policy.pi_features_extractor
        keys = _check_flatten_extractor(extractor, "PPO policy")
        module = _ClippedMean(policy.mlp_extractor.policy_net, policy.action_net, low, high)
        algo = "ppo"
    else:
        raise ExportError(f"algorithm {type(model).__name__} is not supported (SAC or PPO)")
    inputs = []
    for k in keys:
        box = obs_space.spaces[k]
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ExportError(f"observation key {k!r} is not a flat Box")
        inputs.append((k, int(box.shape[0])))
    if norm is not None:
        mean = np.concatenate([np.ravel(norm.obs_rms[k].mean) for k in keys])
        var = np.concatenate([np.ravel(norm.obs_rms[k].var) for k in keys])
        module = _Normalized(module, mean, var, norm.epsilon, norm.clip_obs)
    module = module.to(torch.device("cpu")).eval()
    return module, PolicyInfo(algo, tuple(inputs), low, high)


def _is_jax_sac(model: Any) -> bool:
    """Whether ``model`` is SBX's SAC (``[train] backend = "jax"``), without importing JAX."""
    return type(model).__module__.startswith("sbx.") and type(model).__name__ == "SAC"


def _jax_actor_layers(policy: Any) -> tuple[nn.Module, nn.Module]:
    """SBX's SAC actor as torch layers: ``(latent, mean head)``, the same weights.

    SBX's ``SquashedGaussianActor`` is ``Dense -> relu`` per ``net_arch`` entry,
    then a mean head and a log-std head (flax names them ``Dense_0 .. Dense_{n+1}``
    in call order); its deterministic action is ``tanh(mean)``, the log-std head
    is not needed. A flax ``Dense`` computes ``x @ kernel + bias``, torch's
    ``Linear`` ``x @ weight.T + bias``: the kernel goes in transposed.

    Raises:
        ExportError: another actor class or activation than SBX's default.
    """
    from sbx.common.policies import SquashedGaussianActor

    # the activation survives a save/load as a new object: recognise relu by its values
    probe = np.asarray(policy.activation_fn(np.array([-1.0, 0.5, 2.0], np.float32)))
    is_relu = np.array_equal(probe, np.array([0.0, 0.5, 2.0], np.float32))
    if policy.actor_class is not SquashedGaussianActor or not is_relu:
        raise ExportError(
            f"SBX actor {policy.actor_class.__name__} with {policy.activation_fn} is not "
            "supported (export handles SquashedGaussianActor with relu)"
        )
    params = policy.actor_state.params["params"]
    names = sorted(params, key=lambda name: int(name.rsplit("_", 1)[1]))
    if len(names) != len(policy.net_arch_pi) + 2:
        raise ExportError(f"SBX actor has layers {names}, expected net_arch + mean + log_std")

    def linear(name: str) -> nn.Linear:
        kernel = np.asarray(params[name]["kernel"], dtype=np.float32)
        layer = nn.Linear(*kernel.shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(kernel.T.copy()))
            layer.bias.copy_(torch.from_numpy(np.array(params[name]["bias"], np.float32)))
        return layer

    hidden: list[nn.Module] = []
    for name in names[:-2]:
        hidden += [linear(name), nn.ReLU()]
    return nn.Sequential(*hidden), linear(names[-2])


class _Normalized(nn.Module):
    """``policy(clip((x - mean) / sqrt(var + eps), -clip, clip))``: SB3 VecNormalize's ``normalize_obs``."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, policy: nn.Module, mean: np.ndarray, var: np.ndarray, eps: float, clip: float
    ) -> None:
        super().__init__()
        self.policy = policy
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer(
            "scale", torch.as_tensor(1.0 / np.sqrt(var + eps), dtype=torch.float32)
        )
        self.clip = float(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.clamp((x - self.mean) * self.scale, -self.clip, self.clip)
        return self.policy(z)


class _SquashedMean(nn.Module):
    """SAC: ``low + (tanh(mu(latent(x))) + 1) (high - low) / 2`` (SB3's ``unscale_action``)."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, latent: nn.Module, mu: nn.Module, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.latent = latent
        self.mu = mu
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.tanh(self.mu(self.latent(x)))
        return self.low + 0.5 * (a + 1.0) * (self.high - self.low)


class _ClippedMean(nn.Module):
    """PPO: the Gaussian's mean, clipped to the action bounds (SB3's ``predict``)."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(
        self, latent: nn.Module, head: nn.Module, low: np.ndarray, high: np.ndarray
    ) -> None:
        super().__init__()
        self.latent = latent
        self.head = head
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.head(self.latent(x)), self.low, self.high)


def compare_with_sb3(
    model: Any, scripted: Any, info: PolicyInfo, *, n: int = 256, seed: int = 0
) -> float:
    """Largest ``|scripted(flat(obs)) - model.predict(obs, deterministic=True)|`` on random observations.

    Observations are drawn from the Dict space (standard normal on unbounded
    entries, uniform on bounded ones), as one batch.
    """
    space = model.observation_space
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    batch = {k: np.stack([s[k] for s in samples]) for k, _ in info.inputs}
    expected, _ = model.predict(batch, deterministic=True)
    flat = np.concatenate([batch[k].astype(np.float32) for k, _ in info.inputs], axis=1)
    with torch.inference_mode():
        got = scripted(torch.from_numpy(flat)).numpy()
    return float(np.max(np.abs(got.astype(np.float64) - np.asarray(expected, dtype=np.float64))))


def shield_config(run_dir: Path, width: Any = None) -> tuple[ShieldConfig, Path]:
    """The run's shield at ``width`` (default: its final width), and the scene folder to copy."""
    from safebot.train import final_width, load_run_config, make_env

    spec, _ = load_run_config(run_dir)
    env = make_env(spec, width=final_width(run_dir) if width is None else width)
    try:
        inner = env.unwrapped
        view_scale = np.asarray(env.arm.scale, dtype=np.float64)
        envelope = env.envelope
        q_low, q_high = inner.physics.joint_limits()  # type: ignore[attr-defined]
        arm_joints = tuple(inner.arm_joints)  # type: ignore[attr-defined]
    finally:
        env.close()
    scene = resolve("assets", spec.robot.scene)
    cfg = ShieldConfig(
        action_mode=spec.robot.action_mode,
        action_scale=view_scale,
        control_hz=float(spec.robot.control_hz),
        limits=dict(envelope.limits),
        width=envelope.width,
        joint_gain=envelope.joint_gain,
        barrier_gain=envelope.barrier_gain,
        observe_width=bool(spec.train.observe_width),
        scene=f"{scene.parent.name}/{scene.name}",
        joints=arm_joints,
        q_low=q_low,
        q_high=q_high,
    )
    return cfg, scene.parent


def observation_layout(
    info: PolicyInfo, shield: ShieldConfig, *, observation: str = "full"
) -> tuple[tuple[str, int], ...]:
    """Segments of ``observation``: the arm state of ``ArmTaskEnv._obs``, task extras, widths.

    ``observation`` is the task's ``[robot] observation``: ``"cartesian"`` has no ``q``, ``dq``.
    """
    n = dict(info.inputs).get("observation", 0)
    k = len(shield.joints)
    arm = [("ee_pos", 3), ("ee_vel", 3)]
    if observation != "cartesian":
        arm = [("q", k), ("dq", k), *arm]
    widths = [(f"width/{kind}", 1) for kind in shield.limits] if shield.observe_width else []
    extra = n - sum(s for _, s in arm) - len(widths)
    return tuple(arm + ([("task", extra)] if extra > 0 else []) + widths)


def versions() -> dict[str, str]:
    import mujoco
    import stable_baselines3

    from safebot import __version__

    return {
        "safebot": __version__,
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
        "numpy": np.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def _no_jit_deprecation() -> Iterator[None]:
    # torch 2.13 (used here) marks torch.jit deprecated in favour of torch.export; TorchScript is
    # still what a C++ (libtorch) controller loads without Python, so bundles keep it
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
        yield


def export_run(
    run_dir: str | Path, out: str | Path, *, force: bool = False, which: str = "last"
) -> ExportResult:
    """Export a run directory to a bundle at ``out`` (see the module docstring).

    ``which`` is ``"last"`` (the final model, at the run's final width: the
    default, as before best models were kept; ``safebot export`` defaults to
    ``best``) or ``"best"`` (the best held-out-evaluated model, with the shield
    at the width of that evaluation; a run without one exports the last). The bundle's
    ``config.toml`` records it in ``[run] policy`` and ``[run] policy_step``.

    Raises:
        RunError: ``run_dir`` is not a run, or its model cannot be read.
        ExportError: an unsupported policy, or TorchScript that disagrees with SB3.
        BundleError: ``out`` exists (without ``force``).
    """
    from safebot.train import RunDir, load_policy, load_run_config

    run_dir = Path(run_dir)
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    selected = RunDir(run_dir).select(which)
    _, model = load_policy(run_dir, selected.which)
    module, info = policy_module(model)
    try:
        with _no_jit_deprecation():
            scripted = torch.jit.script(module)
    except Exception as err:
        raise ExportError(f"TorchScript compilation failed: {type(err).__name__}: {err}") from None
    err_max = compare_with_sb3(model, scripted, info)
    if not err_max <= EXPORT_TOLERANCE:
        raise ExportError(
            f"TorchScript disagrees with SB3's predict by {err_max:.3g} (> {EXPORT_TOLERANCE})"
        )
    shield, scene_dir = shield_config(run_dir, selected.width)
    spec, _ = load_run_config(run_dir)
    layout = observation_layout(info, shield, observation=spec.robot.observation)
    info = replace(info, observation_layout=layout)
    config_toml = _with_policy_choice(
        (run_dir / CONFIG_FILE).read_text(encoding="utf-8"), selected.which.value, selected.step
    )
    with tempfile.TemporaryDirectory() as tmp:
        pt = Path(tmp) / "policy.pt"
        with _no_jit_deprecation():
            torch.jit.save(scripted, str(pt))
        write_bundle(
            out,
            policy_pt=pt,
            policy=info,
            shield=shield,
            config_toml=config_toml,
            versions=versions(),
            scene_dir=scene_dir,
            force=force,
        )
    return ExportResult(load_bundle(out), err_max, selected.which.value)


def _with_policy_choice(config_toml: str, which: str, step: int | None) -> str:
    """The run's config.toml with ``[run] policy`` (best/last) and ``policy_step`` set."""
    import tomllib

    from safebot.config import dump_toml

    data = tomllib.loads(config_toml)
    run = dict(data.get("run", {}))
    run["policy"] = which
    if step is not None:
        run["policy_step"] = int(step)
    data["run"] = run
    return dump_toml(data)


__all__ = ["EXPORT_TOLERANCE", "ExportError", "ExportResult", "export_run", "policy_module"]
