"""What an activation file holds, at a glance: its shape and capture settings, and the norms
of its rows per token position and per kind of token (special or not).

Some positions carry rows far larger than the rest: the first position of GPT-style models
(a BOS, or whatever token comes first), which attention uses as a sink, and the special
tokens of BERT-like models ([CLS], [SEP]). Left in the training data they dominate the
squared loss and take atoms of their own; this summary shows whether a file holds them.
"""

import numpy as np

from .metadata import read_capture_metadata
from .provenance import Provenance

# A position whose mean row norm is over this many times the median row norm is "high-norm".
HIGH_NORM_RATIO = 3.0
# Positions reported one by one; the later ones are pooled.
_FIRST_POSITIONS = 8
_CHUNK = 65536


def summarize_activations(path):
    """A summary of the activation file ``path`` (a dict, JSON-ready).

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file of shape (n_rows, n_features), with the sidecars
        :func:`~skmpsae.activations.capture` writes beside it where present.

    Returns
    -------
    summary : dict
        ``n_rows``, ``n_features``, ``dtype``, ``metadata`` (the capture settings, or None);
        ``norm`` (``mean``, ``median``, ``max`` of the rows' L2 norms); with the per-row
        provenance, ``by_position`` (``[position or "8+", n_rows, mean norm]`` for the first
        positions and the rest), ``by_kind`` (``{"special" | "normal": [n_rows, mean
        norm]}``, special by the ids the capture recorded) and ``high_norm_positions``
        (positions whose mean norm is over ``HIGH_NORM_RATIO`` times the median).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from skmpsae.activations import summarize_activations
    >>> path = os.path.join(tempfile.mkdtemp(), "acts.npy")
    >>> np.save(path, np.ones((4, 3), dtype=np.float32))
    >>> round(summarize_activations(path)["norm"]["median"], 4)
    1.7321
    """
    X = np.load(path, mmap_mode="r")
    if X.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array of activations, got shape {X.shape}.")
    norms = np.concatenate(
        [
            np.linalg.norm(np.asarray(X[s : s + _CHUNK], dtype=np.float64), axis=1)
            for s in range(0, X.shape[0], _CHUNK)
        ]
        or [np.zeros(0)]
    )
    meta = read_capture_metadata(path)
    median = float(np.median(norms)) if norms.size else 0.0
    summary = {
        "n_rows": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "dtype": str(X.dtype),
        "metadata": meta,
        "norm": {
            "mean": float(norms.mean()) if norms.size else 0.0,
            "median": median,
            "max": float(norms.max()) if norms.size else 0.0,
        },
    }
    table = Provenance.read(path, X.shape[0]).table
    if table is None:
        return summary
    positions, tokens = np.asarray(table[:, 1]), np.asarray(table[:, 2])
    rows = []
    for p in range(_FIRST_POSITIONS):
        at = positions == p
        if at.any():
            rows.append([p, int(at.sum()), float(norms[at].mean())])
    rest = positions >= _FIRST_POSITIONS
    if rest.any():
        rows.append([f"{_FIRST_POSITIONS}+", int(rest.sum()), float(norms[rest].mean())])
    summary["by_position"] = rows
    special_ids = (meta or {}).get("special_token_ids")
    if special_ids is not None:
        special = np.isin(tokens, special_ids)
        summary["by_kind"] = {
            kind: [int(mask.sum()), float(norms[mask].mean()) if mask.any() else None]
            for kind, mask in (("special", special), ("normal", ~special))
        }
    summary["high_norm_positions"] = [
        row[0] for row in rows if median > 0 and row[2] > HIGH_NORM_RATIO * median
    ]
    return summary
