"""Several SAEs trained from one activation stream, one per hookpoint, with checkpoints that
resume exactly.

Every chunk the stream yields goes to each hookpoint's estimator through the public
``partial_fit`` (which keeps Adam's state between calls). A checkpoint is one safetensors file
written atomically: the estimators' fitted state (what their pickle holds: arrays as tensors,
the rest as tagged JSON, no pickle), the stream's state (corpus position, shuffle-buffer rows
and its random generator) and the run's settings, which a resume must repeat.
"""

import json
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone

from .._atomic import atomic_write
from .._train.progress import Progress
from .._utils import SigintHandler

_CHECKPOINT = "checkpoint.safetensors"


# -- estimator state without pickle --------------------------------------------------------
def _encode(obj, arrays):
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {"__objects__": [_encode(v, arrays) for v in obj.tolist()]}
        key = f"a{len(arrays)}"
        arrays[key] = np.ascontiguousarray(obj)
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return {"__scalar__": obj.item(), "dtype": obj.dtype.str}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    raise TypeError(f"a checkpoint cannot hold a {type(obj).__name__}.")


def _decode(obj, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]].copy()
    if "__objects__" in obj:
        return np.array([_decode(v, arrays) for v in obj["__objects__"]], dtype=object)
    if "__scalar__" in obj:
        return np.dtype(obj["dtype"]).type(obj["__scalar__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    return {_decode(k, arrays): _decode(v, arrays) for k, v in obj["__dict__"]}


def _fitted_state(estimator):
    """The estimator's pickled state less its parameters (which the caller gives again)."""
    params = estimator.get_params(deep=False)
    # __getstate__ may edit the instance dict it is given (an estimator's pops its live
    # trainer): call it on a shallow copy, so that training goes on with the same objects
    # (under a process group, on every rank alike).
    twin = object.__new__(type(estimator))
    twin.__dict__.update(estimator.__dict__)
    return {k: v for k, v in twin.__getstate__().items() if k not in params}


def _restore(template, state):
    estimator = clone(template)
    estimator.__setstate__({**estimator.__getstate__(), **state})
    return estimator


def _describe(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return type(value).__name__


def _settings_of(estimator):
    return {
        "class": type(estimator).__name__,
        **{k: _describe(v) for k, v in estimator.get_params(deep=False).items()},
    }


def _save_checkpoint(path, settings, tokens_done, pass_, stream, estimators):
    from safetensors.numpy import save

    arrays = {}
    stream_state, rows = stream.state_dict()  # collective under a process group
    if _process_group()[0] != 0:
        return
    state = {
        "settings": settings,
        "tokens_done": tokens_done,
        "pass": pass_,
        "stream": _encode(stream_state, arrays),
        "buffer": {h: _encode(rows[h], arrays) for h in rows},
        "estimators": {h: _encode(_fitted_state(e), arrays) for h, e in estimators.items()},
    }
    blob = save(arrays, metadata={"skmpsae_stream_checkpoint": json.dumps(state)})
    with atomic_write(path) as file:
        file.write(blob)


def _load_checkpoint(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as file:
        state = json.loads(file.metadata()["skmpsae_stream_checkpoint"])
        arrays = {key: file.get_tensor(key) for key in file.keys()}
    return state, arrays


# -- data parallelism ----------------------------------------------------------------------
class _GatheredStream:
    """Under a ``torch.distributed`` process group: each rank streams its own documents, and
    every rank gets each chunk of every rank (in rank order), as ``partial_fit`` wants the
    same data on every rank (it trains data-parallel, each rank stepping on its share). The
    model's forward passes, the costly part, are split between the ranks. The state is that
    of every rank's stream; each rank resumes from its own."""

    def __init__(self, stream):
        import torch.distributed as dist

        self.stream, self.dist = stream, dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.chunk_size = stream.chunk_size * self.world_size

    def _all(self, value):
        everyone = [None] * self.world_size
        self.dist.all_gather_object(everyone, value)
        return everyone

    def __iter__(self):
        mine = iter(self.stream)
        while True:
            chunks = [c for c in self._all(next(mine, None)) if c is not None]
            if not chunks:
                return
            yield {h: np.concatenate([c[h] for c in chunks]) for h in chunks[0]}

    def state_dict(self):
        states = self._all(self.stream.state_dict())
        rows = {f"{r}/{h}": v for r, (_, part) in enumerate(states) for h, v in part.items()}
        return {"ranks": [state for state, _ in states]}, rows

    def restart(self):
        self.stream.restart()

    def load_state_dict(self, state, rows):
        prefix = f"{self.rank}/"
        mine = {k[len(prefix) :]: v for k, v in rows.items() if k.startswith(prefix)}
        self.stream.load_state_dict(state["ranks"][self.rank], mine)


def _process_group():
    """``(rank, world_size)`` of the process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# -- the run -------------------------------------------------------------------------------
def _estimators_for(hookpoints, estimator):
    """One unfitted estimator per hookpoint: clones of ``estimator``, or from a dict keyed by
    hookpoint name or pattern (the first key that names it, else the first that matches it
    component by component, else as a whole with ``fnmatch``)."""
    import fnmatch

    from .stream import _matches

    if not isinstance(estimator, dict):
        return {h: clone(estimator) for h in hookpoints}
    chosen = {}
    for h in hookpoints:
        keys = (
            [k for k in estimator if k == h]
            or [k for k in estimator if _matches(h, k)]
            or [k for k in estimator if fnmatch.fnmatchcase(h, k)]
        )
        if not keys:
            raise ValueError(
                f"estimator has no entry for hookpoint {h!r} (keys: {list(estimator)})."
            )
        chosen[h] = clone(estimator[keys[0]])
    return chosen


def _train_from_stream(
    stream,
    estimators,
    *,
    plan,
    steps,
    settings,
    checkpoint_dir,
    checkpoint_every,
    resume,
    verbose,
):
    """Train ``estimators`` (hookpoint -> unfitted estimator) on ``plan.total`` rows of
    ``stream``, over as many passes as that takes, each SAE's learning rate scheduled for its
    ``steps[hookpoint]`` steps; returns the fitted estimators and the rows each was trained
    on. Ctrl-C leaves a checkpoint (when there is a ``checkpoint_dir``) and raises
    :class:`StreamInterrupted`, which names it."""
    path = Path(checkpoint_dir) / _CHECKPOINT if checkpoint_dir is not None else None
    tokens_done, first_pass = 0, 0
    if _process_group()[1] > 1:
        stream = _GatheredStream(stream)
    if path is not None and path.is_file():
        if not resume:
            raise ValueError(
                f"{path}: a checkpoint of an interrupted run is there; pass resume=True "
                "(--resume) to continue it, or delete it to start again."
            )
        state, arrays = _load_checkpoint(path)
        changed = [k for k in settings if state["settings"].get(k) != settings[k]]
        if changed:
            raise ValueError(
                f"{path}: the checkpoint was written with other settings ({', '.join(changed)} "
                "differ); delete it to start again."
            )
        tokens_done, first_pass = int(state["tokens_done"]), int(state.get("pass", 0))
        stream.load_state_dict(
            _decode(state["stream"], arrays),
            {h: _decode(v, arrays) for h, v in state["buffer"].items()},
        )
        estimators = {
            h: _restore(estimators[h], _decode(state["estimators"][h], arrays)) for h in estimators
        }
    total = plan.total
    progress = Progress(
        -(-(total - tokens_done) // stream.chunk_size),
        "train",
        "chunk",
        bool(verbose) and _process_group()[0] == 0,
    )
    start, seen = time.perf_counter(), 0
    next_checkpoint = tokens_done + checkpoint_every
    chunks = _passes(stream, first_pass, max(plan.passes, 1))
    interrupt = _DeferredInterrupt()
    try:
        with interrupt:
            for pass_, chunk in chunks:
                n = min(next(iter(chunk.values())).shape[0], total - tokens_done)
                for h, estimator in estimators.items():
                    estimator._partial_fit(chunk[h][:n], n_steps=steps[h])
                if interrupt.forced:  # a partial_fit kept its model: this chunk is not in it
                    raise KeyboardInterrupt
                tokens_done += n
                seen += n
                rate = seen / max(time.perf_counter() - start, 1e-9)
                losses = " ".join(f"{e.loss_curve_[-1]:.4f}" for e in estimators.values())
                progress.update(f"{tokens_done} tokens, {rate:.0f} tokens/s, loss {losses}")
                if tokens_done >= total:
                    break
                stop = interrupt.agreed()
                if path is not None and (tokens_done >= next_checkpoint or stop):
                    _save_checkpoint(path, settings, tokens_done, pass_, stream, estimators)
                    next_checkpoint = tokens_done + checkpoint_every
                if stop:
                    raise StreamInterrupted(tokens_done, total, path)
    except StreamInterrupted:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint written, if any
        last = path if path is not None and path.is_file() else None
        raise StreamInterrupted(tokens_done, total, last) from None
    finally:
        chunks.close()  # stops the reader thread now, not whenever the generator is collected
        progress.close()
    if tokens_done == 0:
        raise ValueError(
            "the corpus gives no full window of context_size tokens: nothing to train on."
        )
    return estimators, tokens_done


def _passes(stream, first_pass, n_passes):
    """``(pass, chunk)`` over passes ``first_pass .. n_passes - 1`` of ``stream`` (the first
    one from wherever the stream stands: a resumed run goes on mid-pass)."""
    for pass_ in range(first_pass, n_passes):
        if pass_ > first_pass:
            stream.restart()
        chunks = iter(stream)
        try:
            for chunk in chunks:
                yield pass_, chunk
        finally:
            chunks.close()


class _DeferredInterrupt(SigintHandler):
    """Within the block, the first Ctrl-C only raises a flag, read after each chunk (so that
    the chunk's training completes and the checkpoint holds a consistent state); a second
    one raises KeyboardInterrupt at once. Under a process group the ranks agree on the flag,
    as they must take their checkpoint together."""

    def __init__(self):
        self.seen = self.forced = False

    def _handler(self, signum, frame):
        if self.seen:
            self.forced = True
            raise KeyboardInterrupt
        self.seen = True

    def agreed(self):
        if _process_group()[1] == 1:
            return self.seen
        import torch
        import torch.distributed as dist

        flag = torch.tensor([int(self.seen)])
        dist.all_reduce(flag)
        return bool(flag.item())


class StreamInterrupted(KeyboardInterrupt):
    """Ctrl-C during streamed training: how far it got, and the checkpoint it left (None
    when there is none to resume from)."""

    def __init__(self, tokens_done, total, checkpoint):
        super().__init__(tokens_done, total, checkpoint)
        self.tokens_done, self.total, self.checkpoint = tokens_done, total, checkpoint


def _recorded_special_choice(checkpoint_dir):
    """The ``skip_special_tokens`` of the checkpoint in ``checkpoint_dir`` (runs before
    issue 28 kept special tokens by default), else True."""
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / _CHECKPOINT
    if path is None or not path.is_file():
        return True
    try:
        return bool(_load_checkpoint(path)[0]["settings"].get("skip_special_tokens", True))
    except (OSError, ValueError, KeyError):
        return True  # a damaged checkpoint: the resume says so


def _finish(checkpoint_dir):
    """Remove the checkpoint of a finished run (after its models are written)."""
    if checkpoint_dir is not None:
        (Path(checkpoint_dir) / _CHECKPOINT).unlink(missing_ok=True)
