"""Metrics of a dictionary's geometry: coherence, babel, and recovery of known features.

Published in :mod:`skmpsae.metrics`. Dictionaries follow the scikit-learn convention of
``components_``: one atom per **row**, shape ``(n_components, n_features)``. The pairwise
cosines are computed in blocks of rows, so that these metrics stay usable on dictionaries with
tens of thousands of atoms.
"""

from numbers import Integral

import numpy as np
from sklearn.utils import check_array

from .._compat import validate_params
from .._utils import ARRAY_OR_SPARSE, NotBoolInterval

# Gram blocks are built this many entries at a time (float64: 32 MiB).
_GRAM_BLOCK_ENTRIES = 2**22


def _normalized_rows(dictionary, name):
    D = check_array(dictionary, dtype=np.float64, input_name=name)
    norms = np.linalg.norm(D, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        shown = zero[:10].tolist()
        raise ValueError(
            f"{name} has {zero.size} all-zero row(s) (e.g. rows {shown}); a zero atom has no "
            "direction, so cosines with it are undefined. Drop those rows first."
        )
    return D / norms[:, np.newaxis]


def _abs_gram_blocks(D):
    """Yield ``(start, block)`` with ``block = |D[start:stop] @ D.T|`` and self-products set to 0.

    Zeroing the diagonal is safe for both users of this helper: ``max`` and the sum of
    the ``p < n_atoms`` largest entries of a non-negative row are unchanged by
    replacing one entry with the smallest possible value when ``p`` of the others remain.
    """
    n_atoms = D.shape[0]
    step = max(1, _GRAM_BLOCK_ENTRIES // n_atoms)
    for start in range(0, n_atoms, step):
        stop = min(start + step, n_atoms)
        block = np.abs(D[start:stop] @ D.T)
        rows = np.arange(stop - start)
        block[rows, rows + start] = 0.0
        yield start, block


@validate_params({"dictionary": ARRAY_OR_SPARSE}, prefer_skip_nested_validation=True)
def mutual_coherence(dictionary) -> float:
    """Largest absolute cosine between two distinct atoms.

    Parameters
    ----------
    dictionary : array-like of shape (n_components, n_features)
        Dictionary with one atom per row. Rows are normalised to unit L2 norm first,
        so the scale of each atom does not matter; an all-zero row raises a
        ``ValueError``.

    Returns
    -------
    coherence : float
        ``max_{i != j} |<d_i, d_j>|`` in [0, 1]; 0.0 for a single atom.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import mutual_coherence
    >>> mutual_coherence(np.eye(3))
    0.0
    >>> round(mutual_coherence([[1.0, 0.0], [1.0, 1.0]]), 4)
    0.7071
    """
    D = _normalized_rows(dictionary, "dictionary")
    # Rounding can push |cos| of parallel atoms a hair above 1.
    coherence = max((float(block.max()) for _, block in _abs_gram_blocks(D)), default=0.0)
    return min(coherence, 1.0)


@validate_params(
    {"dictionary": ARRAY_OR_SPARSE, "p": [NotBoolInterval(Integral, 1, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def babel(dictionary, p: int) -> float:
    """Babel function (cumulative coherence) ``mu_1(p)`` of a dictionary.

    ``mu_1(p) = max_i sum of the p largest |<d_i, d_j>|, j != i``, with the atoms
    normalised to unit norm. ``mu_1(1)`` is the mutual coherence. Tropp (2004) shows
    that matching pursuit recovers every ``m``-sparse code exactly when
    ``mu_1(m - 1) + mu_1(m) < 1``.

    Parameters
    ----------
    dictionary : array-like of shape (n_components, n_features)
        Dictionary with one atom per row; rows are normalised first, and an all-zero
        row raises a ``ValueError``.
    p : int
        Number of other atoms to accumulate, ``1 <= p <= n_components - 1``.

    Returns
    -------
    mu : float
        Value of the Babel function at ``p``, in ``[0, p]``.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import babel
    >>> D = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> round(babel(D, 1), 6), round(babel(D, 2), 6)
    (0.8, 1.4)
    """
    D = _normalized_rows(dictionary, "dictionary")
    n_atoms = D.shape[0]
    # The upper bound depends on the dictionary, so it cannot be a declared constraint.
    if p > n_atoms - 1:
        raise ValueError(f"p must be between 1 and n_components - 1 = {n_atoms - 1}, got p={p}.")
    best = 0.0
    for _, block in _abs_gram_blocks(D):
        # After the partition, the last p columns of each row hold its p largest values.
        top = np.partition(block, n_atoms - p, axis=1)[:, n_atoms - p :]
        best = max(best, float(top.sum(axis=1).max()))
    return best


@validate_params(
    {
        "true_features": ARRAY_OR_SPARSE,
        "dictionary": ARRAY_OR_SPARSE,
        "return_matches": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def feature_recovery(true_features, dictionary, *, return_matches: bool = False):
    """How well a dictionary recovers known ground-truth feature directions.

    For each true feature the best absolute cosine similarity with any atom is
    taken; the score is their mean. The absolute value makes the score blind to the
    sign of an atom, and several true features may match the same atom (a blended
    atom therefore scores well against each of the features it blends only if it is
    close to each of them).

    Parameters
    ----------
    true_features : array-like of shape (n_true_features, n_features)
        Ground-truth directions, one per row (e.g. the ``features`` returned by
        :func:`skmpsae.datasets.make_hierarchical_features`).
    dictionary : array-like of shape (n_components, n_features)
        Learned dictionary, one atom per row (e.g. an estimator's ``components_``).
    return_matches : bool, default=False
        If True, also return the per-feature cosines and the index of the best atom.

    Returns
    -------
    score : float
        Mean over true features of the best ``|cosine|``, in [0, 1].
    cosines : ndarray of shape (n_true_features,)
        Best ``|cosine|`` of each true feature. Only returned if ``return_matches``.
    best_atoms : ndarray of shape (n_true_features,)
        Index of the atom reaching it. Only returned if ``return_matches``.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import feature_recovery
    >>> F = np.eye(3)
    >>> feature_recovery(F, -F[::-1])
    1.0
    >>> score, cosines, atoms = feature_recovery(F, F[:2], return_matches=True)
    >>> cosines, atoms
    (array([1., 1., 0.]), array([0, 1, 0]))
    """
    F = _normalized_rows(true_features, "true_features")
    D = _normalized_rows(dictionary, "dictionary")
    if F.shape[1] != D.shape[1]:
        raise ValueError(
            f"true_features and dictionary must have the same number of columns "
            f"(n_features), got {F.shape[1]} and {D.shape[1]}."
        )
    similarity = np.abs(F @ D.T)
    best_atoms = np.argmax(similarity, axis=1)
    cosines = np.minimum(similarity[np.arange(F.shape[0]), best_atoms], 1.0)
    score = float(cosines.mean())
    if return_matches:
        return score, cosines, best_atoms
    return score
