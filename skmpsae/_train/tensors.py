"""Numerics under training and encoding: tensors from (memory-mapped) arrays and their cache,
the data's scale, and the error raised when training diverges."""

import numpy as np
import torch

# Loss is measured relative to the data variance (about 1 - R2), so a reconstruction this much
# worse than predicting the mean can only come from a run-away optimisation.
_DIVERGED_LOSS = 1e4

# Rows encoded per step by transform and by the validation score of early stopping, so that
# neither builds the codes of all of X at once.
_TRANSFORM_CHUNK = 4096


class DivergenceError(FloatingPointError):
    """Raised when training produces non-finite or exploding losses.

    The estimator keeps the state it had before the call (or stays unfitted).
    """


def _as_tensor(array, dtype, device) -> torch.Tensor:
    """A tensor on ``device`` from a numpy array; read-only inputs (memmaps) are copied first,
    as torch cannot wrap them."""
    array = np.asarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype).to(device)


def _row_chunks(X, device, dtype=None):
    """``(start, rows)`` for each chunk of ``_TRANSFORM_CHUNK`` rows of ``X``, as tensors on
    ``device``: encoding never builds the codes of all of ``X`` at once, and a memmap is read
    one chunk at a time."""
    for start in range(0, X.shape[0], _TRANSFORM_CHUNK):
        yield start, _as_tensor(X[start : start + _TRANSFORM_CHUNK], dtype, device)


def _cached_tensors(cache, arrays, np_dtype, device, derive, settings=()):
    """``arrays`` (a dict of numpy arrays) as tensors of ``np_dtype`` on ``device``, plus
    ``derive(tensors)``'s extra tensors, from ``cache`` while the arrays and the ``settings``
    the derived tensors depend on (e.g. a memory budget) are unchanged."""
    key = (np.dtype(np_dtype).str, str(device), settings)
    # The entry is read and replaced as one tuple: concurrent transforms (e.g. one float32,
    # one float64) must never see another call's half-written entry.
    entry = cache.get("entry")
    if (
        entry is not None
        and entry[0] == key
        and all(np.array_equal(entry[1][name], array) for name, array in arrays.items())
    ):
        return entry[2]
    dtype = _torch_dtype(np_dtype)
    tensors = {name: _as_tensor(array, dtype, device) for name, array in arrays.items()}
    tensors.update(derive(tensors))
    cache["entry"] = (key, {name: array.copy() for name, array in arrays.items()}, tensors)
    return tensors


def _batch_bounds(n_samples, batch_size) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of an epoch: ``batch_size`` rows each, except that a
    last batch of fewer than half of that joins the batch before. A few rows alone would get a
    step as large as any other (Adam's steps do not shrink with the batch) from a far noisier
    gradient (measured in ``docs/benchmarks.md``, "Where the defaults come from")."""
    starts = list(range(0, n_samples, batch_size))
    if len(starts) > 1 and n_samples - starts[-1] < batch_size / 2:
        starts.pop()
    return list(zip(starts, starts[1:] + [n_samples], strict=False))


def _n_batches(n_samples, batch_size) -> int:
    return len(_batch_bounds(n_samples, batch_size))


def _torch_dtype(np_dtype) -> torch.dtype:
    return torch.float32 if np.dtype(np_dtype) == np.float32 else torch.float64


def _sample_rows(X, rng, max_rows):
    """Up to ``max_rows`` rows of ``X`` and their indices in ``X``."""
    if X.shape[0] <= max_rows:
        return np.asarray(X), np.arange(X.shape[0])
    rows = np.sort(rng.choice(X.shape[0], max_rows, replace=False))
    return np.asarray(X[rows]), rows


# A row whose distance to the median sample is this many times the median distance would
# outweigh a million typical rows in the squared loss. Real activations stay far below: the
# largest token norms in language models (the first token's) are some 10-100 times the median.
_OUTLIER_RATIO = 1e3


def _outlier_rows(X, ratio=_OUTLIER_RATIO):
    """Positions of the rows of ``X`` whose distance to the per-feature median exceeds
    ``ratio`` times the median row's distance; empty when most rows sit on the median."""
    X = np.asarray(X)
    exponent = _peak_exponent(X)
    # The median of a few hundred rows is a centre no single row can move.
    centre = np.median(
        np.ldexp(X[:: max(1, X.shape[0] // 512)].astype(np.float64), -exponent), axis=0
    )
    distance = np.concatenate(
        [
            np.linalg.norm(
                np.ldexp(X[start : start + 1024].astype(np.float64), -exponent) - centre, axis=1
            )
            for start in range(0, X.shape[0], 1024)
        ]
    )
    typical = np.median(distance)
    if typical <= 0:
        return np.empty(0, dtype=np.intp), distance
    return np.flatnonzero(distance > ratio * typical), distance / typical


def _peak_exponent(*arrays):
    """Exponent ``e`` with ``max|arrays| / 2**e`` in [0.5, 1) (0 for all-zero input).

    Sums of squares are taken on data divided by ``2**e``: the division is exact, and squares
    of values near 1e300 (or 1e-170) then neither overflow nor underflow.
    """
    peak = max(float(np.max(np.abs(a), initial=0.0)) for a in arrays)
    return int(np.frexp(peak)[1]) if peak > 0 else 0


def _rms_scale(X, chunk_rows=1024) -> float:
    """RMS deviation from the per-feature mean, in float64; for constant data the RMS of
    ``X`` itself, and 1.0 for all-zero data.

    Works over row chunks, so a wide sample never exists as a whole in float64 (16,384 rows of
    4,096 features would take 1.3 GB of temporaries at once).
    """
    X = np.asarray(X)
    exponent = _peak_exponent(X)

    def chunks():
        for start in range(0, X.shape[0], chunk_rows):
            yield np.ldexp(X[start : start + chunk_rows].astype(np.float64), -exponent)

    mean = sum(chunk.sum(axis=0) for chunk in chunks()) / X.shape[0]
    scale = float(np.sqrt(sum(float(((c - mean) ** 2).sum()) for c in chunks()) / X.size))
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.sqrt(sum(float((c**2).sum()) for c in chunks()) / X.size))
    return float(np.ldexp(scale, exponent)) or 1.0
