"""The run directory: where each file of a run lives, and reading the ones other code needs.

=========================  ==================================================
``config.toml``            the fully resolved task spec plus a ``[run]`` table
``metrics.csv``            one row per held-out evaluation (:data:`METRIC_FIELDS`)
``ckpt/``                  checkpoints; ``ckpt/latest.json`` names the newest
``tb/``                    TensorBoard logs
``final_model.zip``        the model at the end of the run
``final_vecnormalize.pkl`` observation statistics (``[train] normalize_obs``)
``best/``                  the best held-out-evaluated model (``best/best.json``
                           names it, with its evaluation and width)
``summary.json``           the last evaluation, scheduler state, demonstrations
``state.json``             the envelope callback's counters at the end
``demos.npz``              scripted demonstrations (tasks with ``demo_episodes``)
=========================  ==================================================

Every file is written through :mod:`safebot.io` (atomic), so a ``kill -9``
leaves either the old or the new version, and ``ckpt/latest.json`` is replaced
last: it is the only thing ``--resume`` trusts.
"""

from __future__ import annotations

import csv
import io
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safebot.config import SpecError, dump_toml, parse_model
from safebot.io import atomic_write
from safebot.modes import PolicyChoice
from safebot.spec import TaskSpec
from safebot.train.options import RunError

METRIC_FIELDS = (
    "step",
    "width",
    "success_rate",
    "mean_return",
    "cost_rate",
    "harm_per_episode",
    "intervention_rate",
    "mean_correction",
    "train_cost",
    "train_steps",
    "lambda",
    "reason",
    "wall_s",
)
DEMOS_FILE = "demos.npz"
#: observation statistics of a ``normalize_obs`` run, beside ``final_model.zip``
FINAL_NORMALIZER = "final_vecnormalize.pkl"
# the files of one checkpoint: stem prefix and suffix, e.g. ckpt/model_4096.zip
_CKPT_PARTS = {
    "model": ".zip",
    "replay": ".pkl",
    "state": ".json",
    "vecnormalize": ".pkl",
}


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint as ``ckpt/latest.json`` lists it (``None``: not saved with this run)."""

    step: int
    model: Path
    state: Path | None
    replay: Path | None
    normalizer: Path | None
    #: where the observation statistics of this step would be (for error messages)
    expected_normalizer: Path


@dataclass(frozen=True)
class ModelSelection:
    """The saved model ``eval``, ``render`` and ``export`` load, and the width it runs at.

    Attributes:
        which: the model actually selected (``best`` falls back to ``last`` in a run
            that has no best yet, e.g. one written before best models were kept).
        model: the SB3 zip.
        normalizer: where its observation statistics are (``normalize_obs`` runs).
        width: the width it runs at: the best model's evaluation width, or the
            width the run ended at.
        step: the training step of the model (``None``: unknown).
    """

    which: PolicyChoice
    model: Path
    normalizer: Path
    width: Any
    step: int | None


class RunDir:
    """Paths of one run directory (nothing is created until a writer needs it).

    Example:
        >>> RunDir("runs/reach").checkpoint_file("model", 4096)
        PosixPath('runs/reach/ckpt/model_4096.zip')
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @classmethod
    def default(cls, task_name: str) -> RunDir:
        """``runs/<task>-<YYYYmmdd-HHMMSS>``."""
        return cls(Path("runs") / f"{task_name}-{time.strftime('%Y%m%d-%H%M%S')}")

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def ckpt(self) -> Path:
        return self.root / "ckpt"

    @property
    def latest(self) -> Path:
        """``ckpt/latest.json``: the newest complete checkpoint, replaced last."""
        return self.ckpt / "latest.json"

    @property
    def tb(self) -> Path:
        return self.root / "tb"

    @property
    def final_model(self) -> Path:
        return self.root / "final_model.zip"

    @property
    def final_normalizer(self) -> Path:
        return self.root / FINAL_NORMALIZER

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def demos(self) -> Path:
        return self.root / DEMOS_FILE

    @property
    def best(self) -> Path:
        """``best/``: the best held-out-evaluated model; ``best/best.json`` is replaced last."""
        return self.root / "best"

    @property
    def best_index(self) -> Path:
        return self.best / "best.json"

    def best_file(self, part: str, step: int) -> Path:
        """``best/<part>_<step>.<ext>`` for ``part`` in model, vecnormalize."""
        return self.best / f"{part}_{step}{_CKPT_PARTS[part]}"

    def best_entry(self) -> dict[str, Any] | None:
        """``best/best.json`` (step, files, evaluation, width), or ``None`` without a best model.

        Raises:
            RunError: ``best.json`` is not valid JSON or lacks step / model.
        """
        if not self.best_index.exists():
            return None
        try:
            entry = json.loads(self.best_index.read_text())
            int(entry["step"]), str(entry["model"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise RunError(f"best-model index {self.best_index} is corrupt: {err}") from None
        return dict(entry)

    def select(self, which: PolicyChoice | str = PolicyChoice.BEST) -> ModelSelection:
        """The model ``which`` names (see :class:`ModelSelection`).

        Raises:
            RunError: an unknown ``which``, not a run directory, or a run with neither a
                final model nor a checkpoint.
        """
        try:
            choice = PolicyChoice(str(which))
        except ValueError:
            allowed = ", ".join(c.value for c in PolicyChoice)
            raise RunError(f"unknown model {which!r}; choose one of {allowed}") from None
        if not self.config.is_file():
            raise RunError(f"{self.root} is not a safebot run directory (no config.toml)")
        entry = self.best_entry() if choice is PolicyChoice.BEST else None
        if entry is not None:
            step = int(entry["step"])
            return ModelSelection(
                PolicyChoice.BEST,
                self.best / str(entry["model"]),
                self.best_file("vecnormalize", step),
                entry.get("width", 0.0),
                step,
            )
        if self.final_model.exists():
            last = self.summary_data().get("step")
            return ModelSelection(
                PolicyChoice.LAST,
                self.final_model,
                self.final_normalizer,
                self.final_width(),
                None if last is None else int(last),
            )
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            raise RunError(f"{self.root} has no final_model.zip and no checkpoint")
        return ModelSelection(
            PolicyChoice.LAST,
            ckpt.model,
            ckpt.normalizer or ckpt.expected_normalizer,
            self.final_width(),
            ckpt.step,
        )

    def checkpoint_file(self, part: str, step: int) -> Path:
        """``ckpt/<part>_<step>.<ext>`` for ``part`` in model, replay, state, vecnormalize."""
        return self.ckpt / f"{part}_{step}{_CKPT_PARTS[part]}"

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(self.root.iterdir())

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint ``ckpt/latest.json`` names, or ``None`` without one.

        Raises:
            RunError: ``latest.json`` is not valid JSON or lacks the model entry.
        """
        if not self.latest.exists():
            return None
        try:
            entry = json.loads(self.latest.read_text())
            step, model = int(entry["step"]), self.ckpt / entry["model"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise RunError(f"checkpoint index {self.latest} is corrupt: {err}") from None

        def listed(key: str) -> Path | None:
            return self.ckpt / str(entry[key]) if key in entry else None

        return Checkpoint(
            step=step,
            model=model,
            state=listed("state"),
            replay=listed("replay"),
            normalizer=listed("vecnormalize"),
            expected_normalizer=self.checkpoint_file("vecnormalize", step),
        )

    def drop_old_checkpoints(self, keep: int = 2) -> None:
        """Delete all but the newest ``keep`` checkpoints (a crash mid-save leaves a complete one)."""
        for old in sorted(self.ckpt.glob("model_*.zip"), key=_step_of)[:-keep]:
            step = _step_of(old)
            for part in _CKPT_PARTS:
                self.checkpoint_file(part, step).unlink(missing_ok=True)

    # ----------------------------------------------------------------------- config

    def write_config(self, spec: TaskSpec, run: dict[str, Any]) -> None:
        """``config.toml``: the resolved spec and a ``[run]`` table (mode, version, code commit, time)."""
        data = spec.model_dump(mode="json")
        data["run"] = run
        atomic_write(self.config, dump_toml(data))

    def load_config(self) -> tuple[TaskSpec, dict[str, Any]]:
        """The resolved spec and the ``[run]`` table.

        Raises:
            RunError: no ``config.toml``, or one that is not valid TOML or not a valid spec.
        """
        path = self.config
        if not path.is_file():
            raise RunError(f"{self.root} is not a safebot run directory (no config.toml)")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise RunError(f"{path}: corrupt config: {err}") from None
        run = data.pop("run", {})
        try:
            spec = parse_model(data, TaskSpec, str(path))
        except SpecError as err:
            raise RunError(str(err)) from None
        return spec.model_copy(update={"source": str(path)}), run

    # ----------------------------------------------------------------------- metrics

    def last_metrics_row(self) -> dict[str, Any]:
        """The last row of ``metrics.csv`` with numbers parsed (empty if there is none)."""
        if not self.metrics.exists():
            return {}
        with self.metrics.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return {}
        row: dict[str, Any] = {}
        for k, v in rows[-1].items():
            try:
                row[k] = int(v) if k in ("step", "train_steps") else float(v)
            except ValueError:
                row[k] = v
        return row

    def truncate_metrics(self, step: int) -> None:
        """Drop metric rows written after the checkpoint we resume from (they will be redone)."""
        if not self.metrics.exists():
            return
        with self.metrics.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        buf = io.StringIO(newline="")
        # .get: a metrics.csv written before a column existed (e.g. ``lambda``) resumes too
        table = [[r.get(k) or "" for k in METRIC_FIELDS] for r in rows]
        csv.writer(buf).writerows([METRIC_FIELDS, *table])
        atomic_write(self.metrics, buf.getvalue())

    def summary_data(self) -> dict[str, Any]:
        """``summary.json`` (empty for a run that has not finished)."""
        if not self.summary.exists():
            return {}
        return dict(json.loads(self.summary.read_text()))

    def final_width(self) -> Any:
        """The width the run ended at (from ``summary.json``; 0 for a run that has not finished)."""
        if not self.summary.exists():
            return 0.0
        data = self.summary_data()
        sched = data.get("scheduler_state")
        if sched and "width" in sched:
            return sched["width"]
        return data.get("width", 1.0)


def _step_of(p: Path) -> int:
    return int(p.stem.split("_")[-1])


def load_run_config(run_dir: str | Path) -> tuple[TaskSpec, dict[str, Any]]:
    """The resolved spec and run options of a run directory (see :meth:`RunDir.load_config`)."""
    return RunDir(run_dir).load_config()


def write_config(run_dir: Path, spec: TaskSpec, run: dict[str, Any]) -> None:
    """Write ``run_dir/config.toml`` (see :meth:`RunDir.write_config`)."""
    RunDir(run_dir).write_config(spec, run)


def final_width(run_dir: str | Path) -> Any:
    """The width a run ended at (from its summary file)."""
    return RunDir(run_dir).final_width()


__all__ = [
    "DEMOS_FILE",
    "FINAL_NORMALIZER",
    "METRIC_FIELDS",
    "Checkpoint",
    "ModelSelection",
    "RunDir",
    "final_width",
    "load_run_config",
    "write_config",
]
