"""The inputs every inspection function takes: activation rows (an ``ACTS.npy`` path or an
array) checked against a fitted estimator."""

import numpy as np

from .._compat import HasMethods

# The check is shared with the metrics that encode rows (a lower layer).
from .._metrics.probing import _check_rows  # noqa: F401


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
