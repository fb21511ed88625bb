"""Sparse probing, as SAEBench does it: a logistic probe on the k latents whose mean activation
differs most between a class and the rest, against a probe on the dense activations.

The estimator is only asked for its codes (``_sparse_codes`` where it has one, else
``transform``), chunk by chunk, and the codes are kept sparse: memory is O(rows x L0) for the
codes and O(rows x k) for a probe's inputs, never O(rows x n_components).
"""

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_is_fitted

from .._compat import HasMethods, StrOptions, validate_params
from .._utils import NotBoolInterval


def _check_rows(estimator, X, name="X"):
    """``X`` as a 2-D float array of the estimator's width; a memmap stays a memmap."""
    check_is_fitted(estimator)
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}.")
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {X.dtype}.")
    width = np.shape(estimator.components_)[1]
    if X.shape[1] != width:
        raise ValueError(
            f"{name} has {X.shape[1]} features but the model's atoms have {width} "
            f"({type(estimator).__name__} fitted on another model or layer?)."
        )
    return X


def encode_rows(estimator, X, rows=None, chunk_size=4096):
    """The codes of ``X[rows]`` (all rows by default) as one CSR matrix, encoded chunk by
    chunk; estimators without ``_sparse_codes`` (scikit-learn's) go through ``transform``."""
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    sparse_codes = getattr(estimator, "_sparse_codes", None)
    blocks = []
    for start in range(0, rows.size, chunk_size):
        chunk = np.asarray(X[rows[start : start + chunk_size]])
        if sparse_codes is not None:
            blocks.append(sp.csr_matrix(sparse_codes(chunk), dtype=np.float64))
        else:
            blocks.append(sp.csr_matrix(np.asarray(estimator.transform(chunk), dtype=np.float64)))
    if not blocks:
        return sp.csr_matrix((0, np.shape(estimator.components_)[0]))
    return sp.vstack(blocks, format="csr")


def _pool(groups):
    """The (n_groups, n_rows) sparse matrix that averages the rows of each group, and the
    sorted distinct groups."""
    unique, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse)
    P = sp.csr_matrix(
        (1.0 / counts[inverse], (inverse, np.arange(groups.size))),
        shape=(unique.size, groups.size),
    )
    return P, unique, inverse


def _dense_pooled(X, P, chunk_size):
    out = np.zeros((P.shape[0], X.shape[1]))
    for start in range(0, X.shape[0], chunk_size):
        out += P[:, start : start + chunk_size] @ np.asarray(X[start : start + chunk_size], float)
    return out


def _balanced(positive, negative, n_max, rng):
    n = min(positive.size, negative.size, n_max // 2)
    return np.sort(rng.choice(positive, n, replace=False)), np.sort(
        rng.choice(negative, n, replace=False)
    )


def _probe():
    # Scaled because latents' magnitudes differ by orders between estimators; lbfgs is
    # deterministic, so the accuracies depend on random_state only through the split.
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def mean_difference_latents(codes, positive, negative, n_latents):
    """The ``n_latents`` latents with the largest |mean over positive - mean over negative|
    (SAEBench's selection), largest first; ties go to the lower index."""
    diff = np.asarray(codes[positive].mean(axis=0) - codes[negative].mean(axis=0)).ravel()
    return np.argsort(-np.abs(diff), kind="stable")[:n_latents]


@validate_params(
    {
        "estimator": [HasMethods(["transform"])],
        "X": ["array-like"],
        "y": ["array-like"],
        "k": ["array-like", NotBoolInterval(Integral, 1, None, closed="left")],
        "groups": ["array-like", None],
        "pooling": [StrOptions({"mean"}), None],
        "test_size": [NotBoolInterval(Real, 0, 1, closed="neither")],
        "max_samples": [NotBoolInterval(Integral, 4, None, closed="left")],
        "min_samples": [NotBoolInterval(Integral, 1, None, closed="left")],
        "dense_probe": ["boolean"],
        "random_state": ["random_state"],
        "chunk_size": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def sparse_probing(
    estimator,
    X,
    y,
    *,
    k=(1, 2, 5, 10, 20),
    groups=None,
    pooling=None,
    test_size=0.2,
    max_samples=4000,
    min_samples=10,
    dense_probe=True,
    random_state=None,
    chunk_size=4096,
):
    """Accuracy of k-sparse probes on an estimator's latents, against a dense probe on ``X``.

    SAEBench's sparse probing: each class is a binary task against the rest (one-vs-rest),
    with as many positive as negative samples in training and in test (chance is 0.5). On the
    training samples the ``k`` latents whose mean code differs most (in absolute value)
    between the class and the rest are chosen, and a logistic regression on those ``k``
    latents alone is scored on the test samples; a logistic regression on all of ``X`` is the
    reference. Samples are split by ``groups``, so that no group (text) has rows on both sides.

    Parameters
    ----------
    estimator : fitted estimator with ``transform`` and ``components_``
        Any of the package's SAEs, or a scikit-learn dictionary learner.
    X : array-like of shape (n_samples, n_features)
        Activation rows (a ``numpy.memmap`` is read chunk by chunk).
    y : array-like of shape (n_samples,)
        The label of every row. With ``pooling="mean"`` a row's label is its group's, so it
        must be the same for all rows of a group.
    k : int or array-like of int, default=(1, 2, 5, 10, 20)
        The numbers of latents a probe may use; each at most ``n_components``.
    groups : array-like of shape (n_samples,), default=None
        The text (or any unit) of each row, e.g. column 0 of ``ACTS.npy.tokens.npy``; the
        train/test split never cuts a group. None: every row its own group.
    pooling : {"mean"} or None, default=None
        None: one sample per row (token-level labels). ``"mean"``: one sample per group, its
        codes and activations averaged over the group's rows (text-level labels, as SAEBench
        pools over a text's tokens).
    test_size : float, default=0.2
        Fraction of the groups held out for test.
    max_samples : int, default=4000
        At most this many training samples per task (half positive), and as many test
        samples in proportion.
    min_samples : int, default=10
        A class with fewer positive samples than this in training (or none in test) is left
        out, and listed in ``skipped``.
    dense_probe : bool, default=True
        Whether to fit the reference probe on ``X`` (its accuracy depends on ``X``, ``y`` and
        ``random_state`` only: when comparing estimators, compute it once).
    random_state : int, RandomState instance or None, default=None
        The split and the balanced subsampling.
    chunk_size : int, default=4096
        Rows encoded at a time.

    Returns
    -------
    result : Bunch
        ``k`` (the k values), ``accuracy`` (mean over the classes, one per k),
        ``dense_accuracy`` (float; NaN with ``dense_probe=False``),
        ``accuracy_per_class`` (n_classes, n_k), ``dense_accuracy_per_class``,
        ``classes``, ``latents`` (n_classes, max k: the chosen latents, best first),
        ``skipped`` (classes left out), ``n_train`` and ``n_test`` (samples per class).

    Raises
    ------
    ValueError
        When ``y`` has one class, when no class has enough samples, or when a k exceeds
        ``n_components``.

    See Also
    --------
    skmpsae.metrics.absorption : SAEBench-style feature absorption on first letters.
    skmpsae.metrics.token_task_labels : Built-in token-level tasks for ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.metrics import sparse_probing
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(400, 8).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> sae = MatchingPursuitSAE(16, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    >>> result = sparse_probing(sae, X, y, k=(1, 4), random_state=0)
    >>> result.accuracy.shape, result.dense_accuracy > 0.9
    ((2,), True)
    """
    X = _check_rows(estimator, X)
    n_rows = X.shape[0]
    y = np.asarray(y)
    if y.shape != (n_rows,):
        raise ValueError(f"y must have one label per row of X ({n_rows}), got shape {y.shape}.")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"y has one class ({str(classes[0])!r}): nothing to probe.")
    ks = np.atleast_1d(np.asarray(k, dtype=np.int64))
    n_components = np.shape(estimator.components_)[0]
    if ks.size == 0 or ks.min() < 1 or ks.max() > n_components:
        raise ValueError(f"k must be between 1 and n_components={n_components}, got {k!r}.")
    groups = np.arange(n_rows) if groups is None else np.asarray(groups)
    if groups.shape != (n_rows,):
        raise ValueError(f"groups must have one entry per row of X ({n_rows}).")

    codes = encode_rows(estimator, X, chunk_size=chunk_size)
    if pooling == "mean":
        P, unit_groups, inverse = _pool(groups)
        labels = np.empty(unit_groups.size, dtype=y.dtype)
        labels[inverse] = y
        if np.any(labels[inverse] != y):
            raise ValueError('pooling="mean" needs one label per group: y differs within a group.')
        codes, dense, y = (P @ codes).tocsr(), _dense_pooled(X, P, chunk_size), labels
    else:
        unit_groups, dense = groups, None
    rng = check_random_state(random_state)
    split = GroupShuffleSplit(1, test_size=test_size, random_state=rng.randint(2**31 - 1))
    train, test = next(split.split(np.zeros(y.size), y, unit_groups))
    n_test_max = max(2, int(round(max_samples * test_size / (1 - test_size))))

    n_k, top = ks.size, int(ks.max())
    acc = np.full((classes.size, n_k), np.nan)
    dense_acc = np.full(classes.size, np.nan)
    latents = np.full((classes.size, top), -1, dtype=np.int64)
    n_train, n_test, skipped = np.zeros(classes.size, int), np.zeros(classes.size, int), []
    for c, label in enumerate(classes):
        pos_tr, neg_tr = train[y[train] == label], train[y[train] != label]
        pos_te, neg_te = test[y[test] == label], test[y[test] != label]
        if min(pos_tr.size, neg_tr.size) < min_samples or min(pos_te.size, neg_te.size) < 1:
            skipped.append(label)
            continue
        p_tr, n_tr = _balanced(pos_tr, neg_tr, max_samples, rng)
        p_te, n_te = _balanced(pos_te, neg_te, n_test_max, rng)
        fit_rows, eval_rows = np.r_[p_tr, n_tr], np.r_[p_te, n_te]
        fit_y = np.r_[np.ones(p_tr.size), np.zeros(n_tr.size)]
        eval_y = np.r_[np.ones(p_te.size), np.zeros(n_te.size)]
        chosen = mean_difference_latents(codes, p_tr, n_tr, top)
        latents[c] = chosen
        for j, kk in enumerate(ks):
            cols = chosen[:kk]
            probe = _probe().fit(codes[fit_rows][:, cols].toarray(), fit_y)
            acc[c, j] = probe.score(codes[eval_rows][:, cols].toarray(), eval_y)
        if dense_probe:
            if dense is None:
                fit_X = np.asarray(X[fit_rows], dtype=np.float64)
                eval_X = np.asarray(X[eval_rows], dtype=np.float64)
            else:
                fit_X, eval_X = dense[fit_rows], dense[eval_rows]
            dense_acc[c] = _probe().fit(fit_X, fit_y).score(eval_X, eval_y)
        n_train[c], n_test[c] = fit_rows.size, eval_rows.size
    kept = n_train > 0
    if not kept.any():
        raise ValueError(
            f"no class has {min_samples} training samples against the rest (and one in test): "
            "too few rows or groups to probe."
        )
    return Bunch(
        k=ks,
        accuracy=acc[kept].mean(axis=0),
        dense_accuracy=float(dense_acc[kept].mean()) if dense_probe else float("nan"),
        accuracy_per_class=acc[kept],
        dense_accuracy_per_class=dense_acc[kept],
        classes=classes[kept],
        latents=latents[kept],
        skipped=list(skipped),
        n_train=n_train[kept],
        n_test=n_test[kept],
    )
