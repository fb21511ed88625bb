"""Metrics of reconstruction and sparsity, and the scorers built on them; published in
:mod:`skmpsae.metrics`.

The two scorers at the end, :func:`explained_variance_scorer` and :func:`neg_l0_scorer`, have
the ``scorer(estimator, X, y=None)`` signature that scikit-learn accepts wherever it takes
``scoring=`` (``cross_validate``, ``GridSearchCV``...), so they need no ``make_scorer``
wrapping.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array

from .._compat import HasMethods, validate_params
from .._utils import ARRAY_OR_SPARSE


@validate_params(
    {"X": ARRAY_OR_SPARSE, "X_hat": ARRAY_OR_SPARSE}, prefer_skip_nested_validation=True
)
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


@validate_params({"codes": ARRAY_OR_SPARSE}, prefer_skip_nested_validation=True)
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


@validate_params({"codes": ARRAY_OR_SPARSE}, prefer_skip_nested_validation=True)
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


@validate_params({"codes": ARRAY_OR_SPARSE}, prefer_skip_nested_validation=True)
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


@validate_params({"codes": ARRAY_OR_SPARSE}, prefer_skip_nested_validation=True)
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


@validate_params(
    {
        "estimator": [HasMethods(["transform", "inverse_transform"])],
        "X": ARRAY_OR_SPARSE,
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
