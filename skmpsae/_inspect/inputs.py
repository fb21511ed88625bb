"""The inputs every inspection function takes: activation rows (an ``ACTS.npy`` path or an
array) checked against a fitted estimator."""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._compat import HasMethods


def _load_acts(path):
    """A memmap of ``path`` with one-line errors for what is not a 2-D numeric ``.npy``."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc}); truncated?") from None
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D .npy array (n_samples, n_features).")
    return X


_ESTIMATOR = [HasMethods(["fit", "transform"])]


def _check_rows(estimator, X, name="X"):
    """``X`` as a 2-D float array of the estimator's width; a memmap stays a memmap."""
    check_is_fitted(estimator)
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}.")
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {X.dtype}.")
    width = estimator.components_.shape[1]
    if X.shape[1] != width:
        raise ValueError(
            f"{name} has {X.shape[1]} features but the model's atoms have {width} "
            f"({type(estimator).__name__} fitted on another model or layer?)."
        )
    return X
