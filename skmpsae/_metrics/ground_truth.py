"""Ground-truth feature recovery: how well an SAE's latents are the features that made the data.

Published in :mod:`skmpsae.metrics`. The definitions are those of SynthSAEBench (Chanin &
Garriga-Alonso, arXiv:2602.14687), as SAELens implements them in ``sae_lens.synthetic.evals``,
and the tests check equality with SAELens on the same inputs:

- MCC: optimal one-to-one matching (Hungarian) of atoms to true features by absolute cosine,
  mean of the matched cosines;
- uniqueness: distinct true features among the atoms' best matches, over the number of atoms;
- detection precision / recall / F1 of each latent as a detector of its best-matching true
  feature (by decoder cosine), averaged over latents (a latent that never fires scores 0), and
  shrinkage, the mean ratio of the reconstruction's norm to the input's: in :mod:`.detection`.

As in SAELens, a zero row (a zero atom) has cosine 0 with everything rather than raising, so a
model with an unused atom can be scored.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.utils import check_array

from .._compat import validate_params
from .._utils import ARRAY_OR_SPARSE

# SAELens clamps norms at this value before dividing (``sae_lens.util.cosine_similarities``):
# a zero row gets cosine 0 with every other row.
_NORM_FLOOR = 1e-8
# Cosine blocks are built this many entries at a time (float64: 32 MiB).
_BLOCK_ENTRIES = 2**22


def _unit_rows(A, name):
    A = check_array(A, dtype=np.float64, input_name=name)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), _NORM_FLOOR)


def _check_pair(dictionary, true_features):
    D = _unit_rows(dictionary, "dictionary")
    F = _unit_rows(true_features, "true_features")
    if D.shape[1] != F.shape[1]:
        raise ValueError(
            "dictionary and true_features must have the same number of columns (n_features), "
            f"got {D.shape[1]} and {F.shape[1]}."
        )
    return D, F


def _best_matches(D, F):
    """Index of the true feature with the largest ``|cosine|`` for each atom (first on ties)."""
    step = max(1, _BLOCK_ENTRIES // F.shape[0])
    return np.concatenate(
        [np.argmax(np.abs(D[i : i + step] @ F.T), axis=1) for i in range(0, D.shape[0], step)]
    )


@validate_params(
    {"dictionary": ARRAY_OR_SPARSE, "true_features": ARRAY_OR_SPARSE},
    prefer_skip_nested_validation=True,
)
def mean_correlation_coefficient(dictionary, true_features) -> float:
    """Mean correlation coefficient (MCC) between a dictionary and the true features.

    Atoms and true features are matched one to one so as to maximise the sum of their absolute
    cosines (the Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`); the score
    is the mean absolute cosine of the ``min(n_components, n_true_features)`` matched pairs.

    Parameters
    ----------
    dictionary : array-like of shape (n_components, n_features)
        Learned dictionary, one atom per row (an estimator's ``components_``).
    true_features : array-like of shape (n_true_features, n_features)
        Ground-truth directions, one per row.

    Returns
    -------
    mcc : float
        In [0, 1]; 1 when every atom (or every true feature, whichever are fewer) has an exact
        partner of its own, up to sign.

    See Also
    --------
    feature_uniqueness : Whether atoms track distinct true features.
    feature_recovery : Best cosine of each true feature, atoms may be shared.

    Notes
    -----
    The assignment costs ``O(n^2 m)`` for an ``n x m`` cosine matrix: seconds at 1,024 x
    4,096, about a minute at 4,096 x 16,384 (SynthSAEBench-16k).

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import mean_correlation_coefficient
    >>> F = np.eye(3)
    >>> mean_correlation_coefficient(-F[::-1], F)
    1.0
    >>> round(mean_correlation_coefficient([[1.0, 1.0, 0.0]], F), 4)
    0.7071
    """
    D, F = _check_pair(dictionary, true_features)
    similarity = np.abs(D @ F.T)
    rows, cols = linear_sum_assignment(1.0 - similarity)
    return float(similarity[rows, cols].mean())


@validate_params(
    {"dictionary": ARRAY_OR_SPARSE, "true_features": ARRAY_OR_SPARSE},
    prefer_skip_nested_validation=True,
)
def feature_uniqueness(dictionary, true_features) -> float:
    """Fraction of atoms whose best-matching true feature no other atom matches first.

    Each atom is matched to the true feature of largest absolute cosine; the score is the
    number of distinct true features so matched divided by ``n_components``. Duplicated atoms,
    or atoms that all settle on one frequent feature, lower it.

    Parameters
    ----------
    dictionary : array-like of shape (n_components, n_features)
        Learned dictionary, one atom per row.
    true_features : array-like of shape (n_true_features, n_features)
        Ground-truth directions, one per row.

    Returns
    -------
    uniqueness : float
        In ``(0, 1]``; 1 when every atom tracks a different true feature.

    See Also
    --------
    mean_correlation_coefficient : One-to-one matching of atoms to true features.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import feature_uniqueness
    >>> F = np.eye(3)
    >>> feature_uniqueness(F, F)
    1.0
    >>> feature_uniqueness([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1]], F)
    0.5
    """
    D, F = _check_pair(dictionary, true_features)
    return len(np.unique(_best_matches(D, F))) / D.shape[0]
