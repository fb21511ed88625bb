"""Metrics for sparse autoencoders: reconstruction, sparsity and dictionary geometry.

Every function takes plain array-likes (NumPy arrays, SciPy sparse matrices where noted)
and returns Python floats or NumPy arrays, never NaN. Dictionaries follow the
scikit-learn convention of ``components_``: one atom per **row**, shape
``(n_components, n_features)``.

The two scorers at the end, :func:`explained_variance_scorer` and
:func:`neg_l0_scorer`, have the ``scorer(estimator, X, y=None)`` signature that
scikit-learn accepts wherever it takes ``scoring=`` (``cross_validate``,
``GridSearchCV``...), so they need no ``make_scorer`` wrapping.
"""

from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array
from sklearn.utils._param_validation import HasMethods, validate_params

# The metrics of an SAE spliced into its model live beside the splicing code; published here.
from ._splice import spliced_embedding_cosine, spliced_lm_metrics
from ._utils import NotBoolInterval

# Past 400 lines on purpose: two thirds of the file are the docstrings of ten public functions,
# about 130 lines are code, and the functions share one public namespace and its helpers.
__all__ = [
    "explained_variance",
    "l0",
    "component_usage",
    "dead_components",
    "dead_fraction",
    "mutual_coherence",
    "babel",
    "feature_recovery",
    "explained_variance_scorer",
    "neg_l0_scorer",
    "spliced_lm_metrics",
    "spliced_embedding_cosine",
]

# Every array parameter admits sparse matrices: the code metrics read them, and the others leave
# it to check_array to say that dense data is required (clearer than "not an array-like").
_ARRAY = ["array-like", "sparse matrix"]

# Gram blocks are built this many entries at a time (float64: 32 MiB), so that the
# geometry metrics stay usable on dictionaries with tens of thousands of atoms.
_GRAM_BLOCK_ENTRIES = 2**22


@validate_params({"X": _ARRAY, "X_hat": _ARRAY}, prefer_skip_nested_validation=True)
def explained_variance(X, X_hat) -> float:
    """Fraction of the variance of ``X`` explained by the reconstruction ``X_hat``.

    ``R2 = 1 - ||X - X_hat||^2 / ||X - mean(X, axis=0)||^2`` with the per-feature mean,
    i.e. one minus the fraction of variance unexplained (FVU), pooled over all
    features. A reconstruction by the feature means scores 0, a perfect one 1;
    worse-than-mean reconstructions are negative.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Original data.
    X_hat : array-like of shape (n_samples, n_features)
        Reconstruction of ``X``.

    Returns
    -------
    r2 : float
        Explained variance. When ``X`` has zero variance the ratio is undefined; as in
        :func:`sklearn.metrics.r2_score` with ``force_finite=True``, 1.0 is returned if the
        reconstruction is exact and 0.0 otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import explained_variance
    >>> X = np.array([[0.0, 1.0], [2.0, 3.0]])
    >>> explained_variance(X, X)
    1.0
    >>> explained_variance(X, np.tile(X.mean(axis=0), (2, 1)))
    0.0
    """
    X = check_array(X, dtype=np.float64, input_name="X")
    X_hat = check_array(X_hat, dtype=np.float64, input_name="X_hat")
    if X.shape != X_hat.shape:
        raise ValueError(
            f"X and X_hat must have the same shape, got X {X.shape} and X_hat {X_hat.shape}."
        )
    # Dividing by a power of two is exact and keeps the squares of data near 1e300 (or 1e-170)
    # from overflowing (or underflowing to a spurious "constant data").
    peak = max(np.max(np.abs(X)), np.max(np.abs(X_hat)))
    exponent = int(np.frexp(peak)[1]) if peak > 0 else 0
    X, X_hat = np.ldexp(X, -exponent), np.ldexp(X_hat, -exponent)
    residual = float(np.sum((X - X_hat) ** 2))
    total = float(np.sum((X - X.mean(axis=0)) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


def _check_codes(codes):
    return check_array(codes, accept_sparse=("csr", "csc", "coo"), input_name="codes")


@validate_params({"codes": _ARRAY}, prefer_skip_nested_validation=True)
def l0(codes) -> float:
    """Mean number of non-zero codes per sample.

    Parameters
    ----------
    codes : {array-like, sparse matrix} of shape (n_samples, n_components)
        Sparse codes, e.g. the output of an estimator's ``transform``. Explicitly
        stored zeros of a sparse matrix are not counted.

    Returns
    -------
    l0 : float
        Average count of non-zero entries per row.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import l0
    >>> l0(np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 3.0]]))
    1.5
    """
    codes = _check_codes(codes)
    # Sparse matrices may store explicit zeros; ``!= 0`` drops them.
    nonzero = codes != 0
    count = nonzero.count_nonzero() if sp.issparse(nonzero) else np.count_nonzero(nonzero)
    return float(count) / codes.shape[0]


@validate_params({"codes": _ARRAY}, prefer_skip_nested_validation=True)
def component_usage(codes) -> np.ndarray:
    """Fraction of samples in which each component is non-zero.

    Parameters
    ----------
    codes : {array-like, sparse matrix} of shape (n_samples, n_components)
        Sparse codes.

    Returns
    -------
    usage : ndarray of shape (n_components,)
        Firing frequency of each component, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import component_usage
    >>> component_usage(np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 3.0]]))
    array([0. , 0.5, 1. ])
    """
    codes = _check_codes(codes)
    counts = np.asarray((codes != 0).sum(axis=0), dtype=np.float64).ravel()
    return counts / codes.shape[0]


@validate_params({"codes": _ARRAY}, prefer_skip_nested_validation=True)
def dead_components(codes) -> np.ndarray:
    """Boolean mask of the components that are never non-zero on ``codes``.

    A component is only dead relative to the samples it was measured on, so pass
    the codes of a whole (held-out) data set.

    Parameters
    ----------
    codes : {array-like, sparse matrix} of shape (n_samples, n_components)
        Sparse codes.

    Returns
    -------
    dead : ndarray of shape (n_components,), dtype=bool
        ``True`` for components that never fire.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import dead_components
    >>> dead_components(np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 3.0]]))
    array([ True, False, False])
    """
    return component_usage(codes) == 0


@validate_params({"codes": _ARRAY}, prefer_skip_nested_validation=True)
def dead_fraction(codes) -> float:
    """Fraction of components that are never non-zero on ``codes``.

    Parameters
    ----------
    codes : {array-like, sparse matrix} of shape (n_samples, n_components)
        Sparse codes.

    Returns
    -------
    fraction : float
        Number of dead components divided by ``n_components``.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import dead_fraction
    >>> dead_fraction(np.array([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0]]))
    0.5
    """
    return float(np.mean(dead_components(codes)))


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


@validate_params({"dictionary": _ARRAY}, prefer_skip_nested_validation=True)
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
    {"dictionary": _ARRAY, "p": [NotBoolInterval(Integral, 1, None, closed="left")]},
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
    {"true_features": _ARRAY, "dictionary": _ARRAY, "return_matches": ["boolean"]},
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


@validate_params(
    {
        "estimator": [HasMethods(["transform", "inverse_transform"])],
        "X": _ARRAY,
        "y": "no_validation",
    },
    prefer_skip_nested_validation=True,
)
def explained_variance_scorer(estimator, X, y=None) -> float:
    """Scorer: explained variance of ``estimator``'s reconstruction of ``X``.

    Encodes with ``estimator.transform`` and decodes with
    ``estimator.inverse_transform``, then returns :func:`explained_variance`.
    Greater is better, so it can be passed directly as ``scoring=`` to scikit-learn
    model-selection tools.

    Parameters
    ----------
    estimator : fitted estimator
        Must implement ``transform`` and ``inverse_transform``.
    X : array-like of shape (n_samples, n_features)
        Data to reconstruct.
    y : None
        Ignored; present for the scorer signature.

    Returns
    -------
    r2 : float
        Explained variance of the reconstruction.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from skmpsae.metrics import explained_variance_scorer
    >>> X = np.random.RandomState(0).randn(50, 4)
    >>> round(explained_variance_scorer(PCA(n_components=4).fit(X), X), 6)
    1.0
    """
    X_hat = estimator.inverse_transform(estimator.transform(X))
    return explained_variance(X, X_hat)


@validate_params(
    # X goes to the estimator as it is: a pipeline may take text or other non-array input.
    {"estimator": [HasMethods(["transform"])], "X": "no_validation", "y": "no_validation"},
    prefer_skip_nested_validation=True,
)
def neg_l0_scorer(estimator, X, y=None) -> float:
    """Scorer: minus the mean number of non-zero codes ``estimator`` gives ``X``.

    Negated so that greater is better, following scikit-learn's ``neg_*`` scorers.
    Useful as a second metric next to :func:`explained_variance_scorer`, e.g.
    ``scoring={"r2": explained_variance_scorer, "neg_l0": neg_l0_scorer}``.

    Parameters
    ----------
    estimator : fitted estimator
        Must implement ``transform`` (dense or sparse output).
    X : array-like of shape (n_samples, n_features)
        Data to encode.
    y : None
        Ignored; present for the scorer signature.

    Returns
    -------
    neg_l0 : float
        ``-l0(estimator.transform(X))``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from skmpsae.metrics import neg_l0_scorer
    >>> neg_l0_scorer(FunctionTransformer(), np.array([[0.0, 1.0], [2.0, 3.0]]))
    -1.5
    """
    return -l0(estimator.transform(X))
