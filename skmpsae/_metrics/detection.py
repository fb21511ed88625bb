"""Ground-truth detection: each latent as a detector of its best-matching true feature
(precision / recall / F1), shrinkage, and every SynthSAEBench metric of a fitted SAE at once.

Codes and true activations may be dense or SciPy sparse; they are read in blocks of rows, so
the (n_samples, n_true_features) matrix of a large benchmark is never densified whole. The
matching of atoms to true features is :mod:`.ground_truth`'s.
"""

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch, check_array

from .._compat import HasMethods, validate_params
from .._utils import ARRAY_OR_SPARSE, NotBoolInterval
from .ground_truth import (
    _best_matches,
    _check_pair,
    feature_uniqueness,
    mean_correlation_coefficient,
)


def _row_blocks(A, step):
    for start in range(0, A.shape[0], step):
        block = A[start : start + step]
        yield block.toarray() if sp.issparse(block) else np.asarray(block)


class _DetectionCounts:
    """True/false positives and negatives of each latent as a detector of its matched feature,
    accumulated over batches of samples."""

    def __init__(self, best_match):
        self.best_match = best_match
        n = best_match.shape[0]
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)
        self.n_samples = 0

    def add(self, codes, true_activations):
        fires = codes != 0
        truth = true_activations[:, self.best_match] > 0
        self.tp += np.count_nonzero(fires & truth, axis=0)
        self.fp += np.count_nonzero(fires & ~truth, axis=0)
        self.fn += np.count_nonzero(~fires & truth, axis=0)
        self.n_samples += codes.shape[0]

    def result(self):
        tp, fp, fn = (c.astype(np.float64) for c in (self.tp, self.fp, self.fn))
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            total = precision + recall
            f1 = np.where(total > 0, 2 * precision * recall / total, 0.0)
        tn = self.n_samples - tp - fp - fn
        accuracy = (tp + tn) / max(self.n_samples, 1)
        return Bunch(
            f1=float(f1.mean()),
            precision=float(precision.mean()),
            recall=float(recall.mean()),
            accuracy=float(accuracy.mean()),
            f1_per_component=f1,
            precision_per_component=precision,
            recall_per_component=recall,
            best_match=self.best_match,
        )


def _check_codes_pair(codes, true_activations, n_components, n_true_features):
    codes = check_array(codes, accept_sparse="csr", input_name="codes")
    true_activations = check_array(
        true_activations, accept_sparse="csr", input_name="true_activations"
    )
    if codes.shape[0] != true_activations.shape[0]:
        raise ValueError(
            "codes and true_activations must have the same number of rows (samples), got "
            f"{codes.shape[0]} and {true_activations.shape[0]}."
        )
    if codes.shape[1] != n_components:
        raise ValueError(
            f"codes has {codes.shape[1]} columns but dictionary has {n_components} rows; "
            "pass the codes of the dictionary's atoms."
        )
    if true_activations.shape[1] != n_true_features:
        raise ValueError(
            f"true_activations has {true_activations.shape[1]} columns but true_features has "
            f"{n_true_features} rows."
        )
    return codes, true_activations


@validate_params(
    {
        "codes": ARRAY_OR_SPARSE,
        "true_activations": ARRAY_OR_SPARSE,
        "dictionary": ARRAY_OR_SPARSE,
        "true_features": ARRAY_OR_SPARSE,
        "batch_size": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def detection_scores(codes, true_activations, dictionary, true_features, *, batch_size=4096):
    """Precision, recall and F1 of each latent as a detector of its best-matching true feature.

    Each atom is matched to the true feature of largest absolute cosine with it (several atoms
    may share one). Over the samples, the latent "fires" where its code is non-zero and the
    feature is "present" where its true activation is positive; precision is the share of
    firings where the feature is present, recall the share of the feature's presences where
    the latent fires, each 0 when undefined (so a latent that never fires scores 0). The
    scores are the means over latents, as SynthSAEBench reports them.

    Parameters
    ----------
    codes : {array-like, sparse matrix} of shape (n_samples, n_components)
        The SAE's codes for the samples (``transform``'s output).
    true_activations : {array-like, sparse matrix} of shape (n_samples, n_true_features)
        The true features' activations that generated the same samples.
    dictionary : array-like of shape (n_components, n_features)
        The SAE's atoms, one per row (``components_``).
    true_features : array-like of shape (n_true_features, n_features)
        Ground-truth directions, one per row.
    batch_size : int, default=4096
        Samples read at a time; sparse inputs are densified one block at a time only.

    Returns
    -------
    scores : :class:`~sklearn.utils.Bunch`
        ``f1``, ``precision``, ``recall``, ``accuracy`` (floats, means over latents);
        ``f1_per_component``, ``precision_per_component``, ``recall_per_component``
        (ndarrays of shape (n_components,)) and ``best_match`` (index of each atom's true
        feature).

    See Also
    --------
    ground_truth_scores : Every ground-truth metric of a fitted estimator at once.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import detection_scores
    >>> F = np.eye(2)
    >>> truth = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> codes = np.array([[0.5, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> s = detection_scores(codes, truth, F, F)
    >>> s.precision_per_component, s.recall_per_component
    (array([1., 1.]), array([0.5, 1. ]))
    >>> round(s.f1, 4)
    0.8333
    """
    D, F = _check_pair(dictionary, true_features)
    codes, true_activations = _check_codes_pair(codes, true_activations, D.shape[0], F.shape[0])
    counts = _DetectionCounts(_best_matches(D, F))
    blocks = (_row_blocks(codes, batch_size), _row_blocks(true_activations, batch_size))
    for c, t in zip(*blocks, strict=True):
        counts.add(c, t)
    return counts.result()


@validate_params(
    {
        "X": ARRAY_OR_SPARSE,
        "X_hat": ARRAY_OR_SPARSE,
        "min_norm": [NotBoolInterval(Real, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def shrinkage(X, X_hat, *, min_norm=1e-6) -> float:
    """Mean ratio of the reconstruction's norm to the input's, ``||x_hat|| / ||x||``.

    Below 1 the SAE shrinks its outputs (an L1 penalty's bias); above 1 it overshoots. Rows of
    ``X`` with norm at most ``min_norm`` are skipped, where the ratio is undefined.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Inputs.
    X_hat : array-like of shape (n_samples, n_features)
        Their reconstructions (``inverse_transform(transform(X))``).
    min_norm : float, default=1e-6
        Rows of ``X`` with a norm at most this are left out (SAELens's threshold).

    Returns
    -------
    shrinkage : float
        Mean of ``||x_hat_i|| / ||x_i||`` over the rows kept.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.metrics import shrinkage
    >>> X = np.array([[3.0, 4.0], [0.0, 2.0]])
    >>> shrinkage(X, 0.5 * X)
    0.5
    """
    X = check_array(X, dtype=np.float64, input_name="X")
    X_hat = check_array(X_hat, dtype=np.float64, input_name="X_hat")
    if X.shape != X_hat.shape:
        raise ValueError(
            f"X and X_hat must have the same shape, got X {X.shape} and X_hat {X_hat.shape}."
        )
    norms = np.linalg.norm(X, axis=1)
    keep = norms > min_norm
    if not keep.any():
        raise ValueError(
            f"Every row of X has a norm at most min_norm={min_norm}: shrinkage is undefined."
        )
    return float(np.mean(np.linalg.norm(X_hat[keep], axis=1) / norms[keep]))


@validate_params(
    {
        "estimator": [HasMethods(["transform", "inverse_transform"])],
        "X": ARRAY_OR_SPARSE,
        "true_activations": ARRAY_OR_SPARSE,
        "true_features": ARRAY_OR_SPARSE,
        "batch_size": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def ground_truth_scores(estimator, X, true_activations, true_features, *, batch_size=4096):
    """Every SynthSAEBench metric of a fitted SAE on samples with known true features.

    Encodes and decodes ``X`` ``batch_size`` rows at a time and accumulates the metrics of
    ``sae_lens.synthetic.eval_sae_on_synthetic_data``, so that large evaluation sets fit in
    memory.

    Parameters
    ----------
    estimator : fitted estimator
        Must have ``transform``, ``inverse_transform`` and ``components_`` (its atoms).
    X : array-like of shape (n_samples, n_features)
        Samples, e.g. ``make_synthsaebench(...).data``.
    true_activations : {array-like, sparse matrix} of shape (n_samples, n_true_features)
        The true activations that generated ``X``.
    true_features : array-like of shape (n_true_features, n_features)
        Ground-truth directions.
    batch_size : int, default=4096
        Samples encoded at a time.

    Returns
    -------
    scores : :class:`~sklearn.utils.Bunch`
        ``f1``, ``precision``, ``recall``, ``accuracy`` (see :func:`detection_scores`),
        ``mcc`` (:func:`mean_correlation_coefficient`), ``uniqueness``
        (:func:`feature_uniqueness`), ``explained_variance`` (pooled R2, as
        :func:`explained_variance`), ``shrinkage``, ``l0`` (mean non-zero codes), ``true_l0``
        (mean active true features), ``n_dead`` (latents that never fire on ``X``).

    See Also
    --------
    skmpsae.datasets.make_synthsaebench : Samples with their true features.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from skmpsae.metrics import ground_truth_scores
    >>> rng = np.random.RandomState(0)
    >>> truth = rng.rand(100, 3) * (rng.rand(100, 3) < 0.5)
    >>> F = np.eye(3)
    >>> s = ground_truth_scores(PCA(n_components=3).fit(truth @ F), truth @ F, truth, F)
    >>> round(s.explained_variance, 6)
    1.0
    """
    if not hasattr(estimator, "components_"):
        raise TypeError(
            f"estimator must be fitted and have components_ (its atoms); "
            f"{type(estimator).__name__} has none."
        )
    X = check_array(X, dtype=(np.float32, np.float64), input_name="X")
    D, F = _check_pair(estimator.components_, true_features)
    codes_shape = (X.shape[0], D.shape[0])
    true_activations = check_array(
        true_activations, accept_sparse="csr", input_name="true_activations"
    )
    _check_codes_pair(sp.csr_matrix(codes_shape), true_activations, D.shape[0], F.shape[0])
    counts = _DetectionCounts(_best_matches(D, F))
    ever_fired = np.zeros(D.shape[0], dtype=bool)
    sum_x = np.zeros(X.shape[1])
    sum_sq = residual = ratio = 0.0
    n_ratio = nonzero = true_nonzero = 0
    for start in range(0, X.shape[0], batch_size):
        x = X[start : start + batch_size]
        codes = estimator.transform(x)
        x_hat = np.asarray(estimator.inverse_transform(codes), dtype=np.float64)
        codes = codes.toarray() if sp.issparse(codes) else np.asarray(codes)
        truth = true_activations[start : start + batch_size]
        truth = truth.toarray() if sp.issparse(truth) else truth
        counts.add(codes, truth)
        fires = codes != 0
        ever_fired |= fires.any(axis=0)
        nonzero += int(np.count_nonzero(fires))
        true_nonzero += int(np.count_nonzero(truth > 0))
        x = x.astype(np.float64)
        sum_x += x.sum(axis=0)
        sum_sq += float(np.sum(x**2))
        residual += float(np.sum((x - x_hat) ** 2))
        norms = np.linalg.norm(x, axis=1)
        keep = norms > 1e-6
        ratio += float(np.sum(np.linalg.norm(x_hat[keep], axis=1) / norms[keep]))
        n_ratio += int(keep.sum())
    if not n_ratio:
        raise ValueError("Every row of X is (near) zero: shrinkage is undefined.")
    n = X.shape[0]
    total = sum_sq - float(np.sum((sum_x / n) ** 2)) * n
    scores = counts.result()
    del scores["f1_per_component"], scores["precision_per_component"]
    del scores["recall_per_component"], scores["best_match"]
    scores.update(
        mcc=mean_correlation_coefficient(D, F),
        uniqueness=feature_uniqueness(D, F),
        explained_variance=1.0 - residual / total if total > 0 else float(residual == 0),
        shrinkage=ratio / n_ratio,
        l0=nonzero / n,
        true_l0=true_nonzero / n,
        n_dead=int(np.count_nonzero(~ever_fired)),
    )
    return scores
