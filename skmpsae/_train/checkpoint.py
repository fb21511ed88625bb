"""Checkpoints of a fit in progress: what they hold, how they are written and checked.

A checkpoint is one file, ``checkpoint.pt`` in the checkpoint directory, replaced atomically
at every save, so that a run killed at any instant leaves the last complete checkpoint. It
holds the trainer's whole state (parameters, Adam's moments, the schedule and its position,
the data order's random state and the position within the epoch), the losses of the completed
epochs, and what the run was: the estimator's class and parameters and the data's shape and
dtype, so that a resume on another model or other data is refused with a clear message.

The file is written by ``torch.save`` with numpy arrays stored as tensors, and read back with
``torch.load(weights_only=True)``: loading a checkpoint never runs code from the file.
"""

import numbers
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .._atomic import atomic_write
from .distributed import is_main_process

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "skmpsae-checkpoint"
_VERSION = 1
# Parameters that do not change what a fit computes, so a resume may change them.
_FREE_PARAMS = {"verbose", "callback", "device"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: missing, corrupted or from another run."""


def checkpoint_path(directory) -> Path:
    return Path(directory) / CHECKPOINT_NAME


_DESCEND = object()


def _rebuild(obj, convert):
    """``obj`` rebuilt through its nested dicts, lists and tuples, each node replaced by
    ``convert(node)`` unless that returns ``_DESCEND`` (then its items are rebuilt)."""
    replaced = convert(obj)
    if replaced is not _DESCEND:
        return replaced
    if isinstance(obj, dict):
        return {key: _rebuild(value, convert) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(value, convert) for value in obj)
    return obj


def _encode_node(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {"__strings__": [str(v) for v in obj]}
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    return _DESCEND


def _decode_node(obj):
    if isinstance(obj, dict) and set(obj) == {"__ndarray__"}:
        return obj["__ndarray__"].numpy()
    if isinstance(obj, dict) and set(obj) == {"__strings__"}:
        return np.asarray(obj["__strings__"], dtype=object)
    return _DESCEND


def _encode(obj):
    """``obj`` with numpy arrays and scalars turned into what ``weights_only`` loading accepts."""
    return _rebuild(obj, _encode_node)


def _decode(obj):
    return _rebuild(obj, _decode_node)


def state_as_arrays(obj) -> Any:
    """A trainer state with every tensor as a numpy array (marked, so that
    :func:`state_from_arrays` restores it): what an estimator's pickle carries, which then
    holds no torch object and loads on any machine."""

    def to_array(node):
        if isinstance(node, torch.Tensor):
            return {"__tensor__": node.detach().cpu().numpy().copy()}
        return _DESCEND

    return _rebuild(obj, to_array)


def state_from_arrays(obj) -> Any:
    def to_tensor(node):
        if isinstance(node, dict) and set(node) == {"__tensor__"}:
            return torch.from_numpy(node["__tensor__"].copy())
        return _DESCEND

    return _rebuild(obj, to_tensor)


def _describe_param(value):
    """A parameter as the checkpoint records it: plain values as they are, arrays as arrays,
    anything else (e.g. a RandomState instance) by its type, which is all a resume can check."""
    if value is None or isinstance(value, (str, bool, numbers.Number)):
        return value
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.device):
        return str(value)
    return f"<{type(value).__name__}>"


def run_description(name, params, X) -> dict:
    """What a checkpoint records of its run, to check a resume against: the estimator's class
    ``name``, its ``params`` (``get_params(deep=False)``) and the data's shape and dtype."""
    return {
        "estimator": name,
        "params": {k: _describe_param(v) for k, v in params.items() if k not in _FREE_PARAMS},
        "data_shape": list(X.shape),
        "data_dtype": np.dtype(X.dtype).name,
    }


def save_checkpoint(directory, run, trainer_state, loss_curve, n_dead) -> None:
    """Write the checkpoint of ``run`` (from :func:`run_description`) atomically."""
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "run": run,
        "trainer": trainer_state,
        "loss_curve": [float(v) for v in loss_curve],
        "n_dead": n_dead,
    }
    with atomic_write(checkpoint_path(directory)) as file:
        torch.save(_encode(payload), file)


def load_checkpoint(directory, run) -> dict[str, Any]:
    """The checkpoint in ``directory``, checked against ``run``; a CheckpointError with a
    one-line message says what is wrong."""
    path = checkpoint_path(directory)
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not path.is_file():
        raise CheckpointError(f"{directory}: no checkpoint to resume from ({path} is missing)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling fails with many exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: corrupted or not a skmpsae checkpoint ({reason[:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not a skmpsae checkpoint")
    if payload.get("version") != _VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('version')}, this skmpsae reads "
            f"version {_VERSION}"
        )
    payload = cast(dict, _decode(payload))
    _check_same_run(path, payload["run"], run)
    return payload


def _check_same_run(path, saved, current) -> None:
    if saved["estimator"] != current["estimator"]:
        raise CheckpointError(
            f"{path}: the checkpoint is of a {saved['estimator']}, not a {current['estimator']}"
        )
    changed = [
        f"{name}={saved['params'].get(name)!r} there, {value!r} here"
        for name, value in current["params"].items()
        if not _same(saved["params"].get(name), value)
    ]
    if changed:
        raise CheckpointError(
            f"{path}: the checkpoint is of a model with other parameters ("
            + "; ".join(changed)
            + ")"
        )
    if (saved["data_shape"], saved["data_dtype"]) != (current["data_shape"], current["data_dtype"]):
        raise CheckpointError(
            f"{path}: the checkpoint was taken on data of shape {tuple(saved['data_shape'])} "
            f"({saved['data_dtype']}), got {tuple(current['data_shape'])} "
            f"({current['data_dtype']})"
        )


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and np.array_equal(a, b)
        )
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, numbers.Number)
            and isinstance(b, numbers.Number)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    )


class _Checkpointer:
    """Saves a fit's checkpoints: every ``every`` steps and at each epoch's end, from the
    process that writes files (rank 0 of a process group) only."""

    def __init__(self, directory, every, run):
        self.directory = Path(directory)
        self.every = every
        self.run = run
        self.loss_curve = []
        self.n_dead = None
        self._cleaned = False

    @classmethod
    def from_fit_args(cls, run, checkpoint_dir, checkpoint_every, resume) -> "_Checkpointer | None":
        """Check ``fit``'s checkpoint arguments; None when no checkpoints are asked for.
        ``run`` is the fit's :func:`run_description`."""
        every = checkpoint_every
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}.")
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False, got {resume!r}.")
        if checkpoint_dir is None:
            if resume:
                raise ValueError("resume=True needs the checkpoint_dir to resume from.")
            return None
        directory = Path(checkpoint_dir)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"checkpoint_dir {str(directory)!r} exists and is not a directory.")
        return cls(directory, int(checkpoint_every), run)

    def resume(self) -> dict[str, Any]:
        """The saved trainer state, and the losses and dead count of the completed epochs."""
        payload = load_checkpoint(self.directory, self.run)
        self.loss_curve = list(payload["loss_curve"])
        self.n_dead = payload["n_dead"]
        return payload["trainer"]

    def on_epoch(self, trainer_state, loss, n_dead) -> None:
        self.loss_curve.append(loss)
        self.n_dead = n_dead
        self.save(trainer_state)

    def save(self, trainer_state) -> None:
        if is_main_process():
            self.directory.mkdir(parents=True, exist_ok=True)
            if not self._cleaned:
                # A run killed while writing leaves its temporary file (as large as a
                # checkpoint); the run that takes over the directory removes it.
                for stale in self.directory.glob(f".{CHECKPOINT_NAME}.*.tmp"):
                    stale.unlink(missing_ok=True)
                self._cleaned = True
            save_checkpoint(self.directory, self.run, trainer_state, self.loss_curve, self.n_dead)
