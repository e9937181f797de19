"""Deploy bundles: a directory that holds everything a trained policy needs to run on a robot.

Layout (every file is listed in ``manifest.json`` with its SHA-256)::

    BUNDLE/
      manifest.json     format, version, bundle hash, {file: {sha256, bytes}}
      policy.pt         TorchScript: flat float32 observation (batch, n) -> action (batch, k)
      policy.json       the policy's I/O contract: input order and sizes, action bounds, algorithm
      shield.json       the envelope (start, cap, loosen per limit), the width it runs at, the
                        action scale and mode, the control rate, the arm's joints and limits
      config.toml       the run's resolved task spec (goal region, threshold, rates, ...)
      versions.json     safebot, torch, mujoco, numpy, stable-baselines3, python at export
      assets/<robot>/   the MJCF scene the policy was trained in (kinematics at deploy time)

:func:`load_bundle` checks the manifest before it reads anything else: a
missing, extra or changed file, or a malformed manifest, raises
:class:`BundleError` with one line naming the file. The hashes detect
corruption and casual edits; they are not a signature (anyone can rewrite a
manifest), so compare the bundle hash that ``safebot export`` printed with the
one ``safebot deploy`` reports.

Example:
    >>> bundle = load_bundle("bundles/reach")
    >>> policy = bundle.load_module()              # torch.jit.ScriptModule
    >>> envelope = bundle.shield.envelope()        # at the exported width
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safebot.config import SpecError, parse_model
from safebot.envelope import Envelope, EnvelopeError, Limit
from safebot.io import atomic_path
from safebot.spec import TaskSpec

F64 = NDArray[np.float64]

FORMAT = "safebot-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
POLICY_FILE = "policy.pt"
POLICY_INFO = "policy.json"
SHIELD_FILE = "shield.json"
CONFIG_FILE = "config.toml"
VERSIONS_FILE = "versions.json"
ASSETS_DIR = "assets"
#: files every bundle has (the scene under assets/ is checked through shield.json)
REQUIRED = (POLICY_FILE, POLICY_INFO, SHIELD_FILE, CONFIG_FILE, VERSIONS_FILE)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(ValueError):
    """A bundle cannot be written or is missing, tampered or corrupt; one line naming the file."""


# ----------------------------------------------------------------------------- contents


@dataclass(frozen=True)
class PolicyInfo:
    """``policy.json``: how to call ``policy.pt``.

    Attributes:
        algo: ``"sac"`` (``tanh(mu)``, unscaled to the action bounds) or ``"ppo"``
            (the Gaussian's mean, clipped to the action bounds).
        inputs: ``(key, size)`` in the order they are concatenated into the flat
            input: stable-baselines3's ``CombinedExtractor`` order, i.e. the Dict
            observation space's (sorted) key order.
        action_low, action_high: the action space bounds (the policy's output range).
        observation_layout: ``(name, size)`` segments of the ``observation`` key, in order
            (``q``, ``dq``, ``ee_pos``, ``ee_vel``, task extras, ``width/<kind>``); documentation
            for whoever feeds the policy, checked by the deploy glue.
    """

    algo: str
    inputs: tuple[tuple[str, int], ...]
    action_low: F64
    action_high: F64
    observation_layout: tuple[tuple[str, int], ...] = ()

    @property
    def input_size(self) -> int:
        return sum(n for _, n in self.inputs)

    @property
    def action_size(self) -> int:
        return int(self.action_low.shape[0])

    def flatten(self, obs: Mapping[str, Any]) -> NDArray[np.float32]:
        """Concatenate a Dict observation in the input order, as float32 of shape ``(1, n)``."""
        parts = [np.asarray(obs[k], dtype=np.float32).reshape(-1) for k, _ in self.inputs]
        return np.concatenate(parts)[None, :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "algo": self.algo,
            "inputs": [{"key": k, "size": n} for k, n in self.inputs],
            "input_size": self.input_size,
            "input_dtype": "float32",
            "output": "deterministic action in [action_low, action_high]",
            "action_low": self.action_low.tolist(),
            "action_high": self.action_high.tolist(),
            "observation_layout": [{"name": k, "size": n} for k, n in self.observation_layout],
            "normalisation": None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyInfo:
        return cls(
            algo=str(d["algo"]),
            inputs=tuple((str(e["key"]), int(e["size"])) for e in d["inputs"]),
            action_low=np.asarray(d["action_low"], dtype=np.float64),
            action_high=np.asarray(d["action_high"], dtype=np.float64),
            observation_layout=tuple(
                (str(e["name"]), int(e["size"])) for e in d.get("observation_layout", [])
            ),
        )


@dataclass(frozen=True)
class ShieldConfig:
    """``shield.json``: the envelope and everything the projection needs besides the arm's state.

    Attributes:
        action_mode: ``"ee_velocity"`` or ``"joint_velocity"``.
        action_scale: physical units per unit of action (the task's hard caps).
        control_hz: the policy's rate (Hz).
        limits: the envelope's limits (start, cap, loosen) by kind.
        width: the width per limit kind the run ended at.
        joint_gain, barrier_gain: the envelope's barrier gains (1/s).
        observe_width: the policy observes the width per limit kind (appended to ``observation``).
        scene: the MJCF scene, relative to the bundle's ``assets/``.
        joints: the arm's joint names (base to tip); ``q_low`` / ``q_high`` their limits (rad).
    """

    action_mode: str
    action_scale: F64
    control_hz: float
    limits: dict[str, Limit]
    width: dict[str, float]
    joint_gain: float
    barrier_gain: float
    observe_width: bool
    scene: str
    joints: tuple[str, ...]
    q_low: F64
    q_high: F64

    def envelope(self) -> Envelope:
        """A fresh :class:`Envelope` with these limits at :attr:`width`."""
        return Envelope(
            self.limits, self.width, joint_gain=self.joint_gain, barrier_gain=self.barrier_gain
        )

    def to_dict(self) -> dict[str, Any]:
        env = self.envelope()
        b = env.bounds()
        bounds = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in vars(b).items()
            if v is not None
        }
        return {
            "action_mode": self.action_mode,
            "action_scale": self.action_scale.tolist(),
            "control_hz": self.control_hz,
            "control_dt": 1.0 / self.control_hz,
            "width": self.width,
            "envelope": {
                "joint_gain": self.joint_gain,
                "barrier_gain": self.barrier_gain,
                "limits": {
                    k: {
                        "start": lim.start.tolist(),
                        "cap": lim.cap.tolist(),
                        "loosen": lim.loosen.tolist(),
                    }
                    for k, lim in self.limits.items()
                },
            },
            "bounds_at_width": bounds,
            "observe_width": self.observe_width,
            "robot": {
                "scene": self.scene,
                "joints": list(self.joints),
                "q_low": self.q_low.tolist(),
                "q_high": self.q_high.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShieldConfig:
        env = d["envelope"]
        limits = {
            str(k): Limit.make(k, v["start"], v["cap"], v["loosen"])
            for k, v in env["limits"].items()
        }
        robot = d["robot"]
        return cls(
            action_mode=str(d["action_mode"]),
            action_scale=np.asarray(d["action_scale"], dtype=np.float64),
            control_hz=float(d["control_hz"]),
            limits=limits,
            width={str(k): float(v) for k, v in d["width"].items()},
            joint_gain=float(env["joint_gain"]),
            barrier_gain=float(env["barrier_gain"]),
            observe_width=bool(d["observe_width"]),
            scene=str(robot["scene"]),
            joints=tuple(str(j) for j in robot["joints"]),
            q_low=np.asarray(robot["q_low"], dtype=np.float64),
            q_high=np.asarray(robot["q_high"], dtype=np.float64),
        )


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk (from :func:`load_bundle`)."""

    root: Path
    digest: str
    policy: PolicyInfo
    shield: ShieldConfig
    spec: TaskSpec
    versions: dict[str, str]
    manifest: dict[str, Any]

    @property
    def scene_path(self) -> Path:
        """The bundle's own copy of the task scene."""
        return self.root / ASSETS_DIR / self.shield.scene

    def load_module(self) -> Any:
        """The TorchScript policy (``torch.jit.ScriptModule``, CPU, eval mode)."""
        import torch

        path = self.root / POLICY_FILE
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit (see export.py)
                warnings.filterwarnings(
                    "ignore", category=DeprecationWarning, message=".*torch.jit"
                )
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # torch raises RuntimeError and friends for a bad archive
            raise BundleError(
                f"{path}: not a loadable TorchScript archive: {type(err).__name__}: {_first_line(err)}"
            ) from None
        module.eval()
        return module

    def spec_for_kinematics(self) -> TaskSpec:
        """The task spec with its scene pointing at the bundle's copy (for building the model).

        Without the task's ``[uncertainty]``: the per-episode perception error is a training
        device (docs/design.md, rule 6); on a robot the map is the one the deployment gives
        (here the task's nominal obstacles, which the stub's plant also holds).
        """
        from safebot.spec import UncertaintySection

        robot = self.spec.robot.model_copy(update={"scene": str(self.scene_path)})
        return self.spec.model_copy(update={"robot": robot, "uncertainty": UncertaintySection()})


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """The bundle's content hash: SHA-256 over ``name NUL sha256 LF`` of every file, sorted by name."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return h.hexdigest()


def _listing(root: Path) -> list[str]:
    """Every regular file under ``root`` as a POSIX relative path (``manifest.json`` left out)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return out


# ----------------------------------------------------------------------------- writing


def write_bundle(
    out: str | Path,
    *,
    policy_pt: Path,
    policy: PolicyInfo,
    shield: ShieldConfig,
    config_toml: str,
    versions: Mapping[str, str],
    scene_dir: Path,
    force: bool = False,
) -> Path:
    """Write a bundle directory atomically (a temporary sibling renamed into place, :mod:`safebot.io`).

    Args:
        out: the bundle directory to create.
        policy_pt: a saved TorchScript archive (copied).
        scene_dir: the robot's asset folder (copied to ``assets/<name>/``); ``shield.scene``
            must lie inside it.
        force: replace an existing ``out``.

    Raises:
        BundleError: ``out`` exists (without ``force``) or is not writable.
    """
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    with atomic_path(out, directory=True) as tmp:
        shutil.copyfile(policy_pt, tmp / POLICY_FILE)
        (tmp / POLICY_INFO).write_text(json.dumps(policy.to_dict(), indent=2) + "\n")
        (tmp / SHIELD_FILE).write_text(json.dumps(shield.to_dict(), indent=2) + "\n")
        (tmp / CONFIG_FILE).write_text(config_toml)
        (tmp / VERSIONS_FILE).write_text(json.dumps(dict(versions), indent=2) + "\n")
        shutil.copytree(
            scene_dir,
            tmp / ASSETS_DIR / scene_dir.name,
            ignore=shutil.ignore_patterns(".*", "__pycache__"),
        )
        files = {
            name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in _listing(tmp)
        }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hash": bundle_digest(files),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


# ----------------------------------------------------------------------------- reading


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """Check a bundle against its manifest; returns the manifest.

    Raises:
        BundleError: the directory or ``manifest.json`` is missing or malformed, a
            listed file is missing or fails its size / SHA-256 check, a file is not
            listed, or the bundle hash does not match the file list.
    """
    root = Path(path)
    if not root.exists():
        raise BundleError(f"bundle {root} not found")
    if not root.is_dir():
        raise BundleError(
            f"bundle {root} is not a directory (a bundle is a folder from `safebot export`)"
        )
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing; {root} is not a safebot bundle or is incomplete")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{mpath}: bad manifest: not valid JSON ({_first_line(err)})") from None
    files = _check_manifest_shape(mpath, manifest)
    for name in REQUIRED:
        if name not in files:
            raise BundleError(f"{mpath}: bad manifest: does not list the required file {name}")
    for name, entry in files.items():
        p = root / name
        if not p.is_file():
            raise BundleError(f"{p}: missing (listed in {MANIFEST})")
        size = p.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(
                f"{p}: {size} bytes, {MANIFEST} says {entry['bytes']}: tampered or corrupt"
            )
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            raise BundleError(
                f"{p}: SHA-256 {digest[:12]}… does not match {entry['sha256'][:12]}… in "
                f"{MANIFEST}: tampered or corrupt"
            )
    extra = [n for n in _listing(root) if n not in files]
    if extra:
        raise BundleError(f"{root / extra[0]}: not listed in {MANIFEST}: tampered bundle")
    if bundle_digest(files) != manifest["hash"]:
        raise BundleError(
            f"{mpath}: bad manifest: its hash does not match its file list: tampered or corrupt"
        )
    return dict(manifest)


def _check_manifest_shape(mpath: Path, manifest: Any) -> dict[str, dict[str, Any]]:
    def bad(why: str) -> BundleError:
        return BundleError(f"{mpath}: bad manifest: {why}")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if manifest.get("format") != FORMAT:
        raise bad(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise bad(f"format_version {version!r}; this safebot reads version {FORMAT_VERSION}")
    if not isinstance(manifest.get("hash"), str) or not _HEX64.match(manifest["hash"]):
        raise bad("'hash' is not a SHA-256 hex digest")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise bad("'files' is not a non-empty table")
    for name, entry in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or name in ("", MANIFEST) or "\\" in name:
            raise bad(f"file name {name!r} is not a plain relative path")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _HEX64.match(entry["sha256"])
            or not isinstance(entry.get("bytes"), int)
            or isinstance(entry.get("bytes"), bool)
            or entry["bytes"] < 0
        ):
            raise bad(f"entry for {name!r} needs 'sha256' (64 hex digits) and 'bytes' (>= 0)")
    return files


def load_bundle(path: str | Path) -> Bundle:
    """Verify a bundle (:func:`verify_bundle`) and read its contents.

    Raises:
        BundleError: see :func:`verify_bundle`; also a file whose content does
            not parse (one line naming it).
    """
    root = Path(path)
    manifest = verify_bundle(root)

    def read_json(name: str) -> Any:
        p = root / name
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{p}: not valid JSON ({_first_line(err)})") from None

    try:
        policy = PolicyInfo.from_dict(read_json(POLICY_INFO))
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{root / POLICY_INFO}: malformed: {_first_line(err)}") from None
    try:
        shield = ShieldConfig.from_dict(read_json(SHIELD_FILE))
    except (KeyError, TypeError, ValueError, EnvelopeError) as err:
        raise BundleError(f"{root / SHIELD_FILE}: malformed: {_first_line(err)}") from None
    versions = read_json(VERSIONS_FILE)
    if not isinstance(versions, dict):
        raise BundleError(f"{root / VERSIONS_FILE}: malformed: not a JSON object")
    cpath = root / CONFIG_FILE
    try:
        data = tomllib.loads(cpath.read_text(encoding="utf-8"))
        data.pop("run", None)
        spec = parse_model(data, TaskSpec, str(cpath))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise BundleError(f"{cpath}: not valid TOML ({_first_line(err)})") from None
    except SpecError as err:
        raise BundleError(_first_line(err)) from None
    scene = root / ASSETS_DIR / shield.scene
    if not scene.is_file() or f"{ASSETS_DIR}/{shield.scene}" not in manifest["files"]:
        raise BundleError(f"{scene}: the task scene named in {SHIELD_FILE} is not in the bundle")
    return Bundle(
        root=root,
        digest=str(manifest["hash"]),
        policy=policy,
        shield=shield,
        spec=spec.model_copy(update={"source": str(cpath)}),
        versions={str(k): str(v) for k, v in versions.items()},
        manifest=manifest,
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


__all__ = [
    "Bundle",
    "BundleError",
    "PolicyInfo",
    "ShieldConfig",
    "bundle_digest",
    "load_bundle",
    "verify_bundle",
    "write_bundle",
]
