"""One streaming pass over activation rows: per-atom statistics in memory O(n_components x
(n_top + max_partners)).

:class:`_Accumulator` takes the sparse codes of one chunk of rows at a time, as ``(rows, atoms,
values)`` triples (plus, for matching pursuit, the step at which each atom was selected), and
keeps, per atom: the exact firing count, sum and maximum; the exact ``n_top`` largest values and
their rows; a histogram of the firing magnitudes on a range that doubles as larger values
arrive (merging bins two by two keeps the counts exact); the count of selections at each
pursuit step; and the count of ordered pairs of atoms that fire in the same row (``i`` before
``j``: selected at an earlier step by matching pursuit, or with a larger activation for the
other encoders), for each atom's strongest partners (:mod:`.pairs`). The top values and the
histogram are :mod:`.summaries`.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .._compat import Interval, validate_params
from .._pursuit.encode import _sparse_steps
from .._train.tensors import _TRANSFORM_CHUNK
from .._utils import NotBoolInterval
from .inputs import _ESTIMATOR, _check_rows
from .pairs import _PairSummary
from .selections import _by_value, _first_selections, _iter_codes
from .summaries import _DoublingHistogram, _FiringSample, _TopN
from .tokens import _TokenCounts


class _Accumulator:
    def __init__(
        self,
        n_components,
        n_top,
        n_bins,
        n_steps,
        pair_steps,
        max_partners,
        row_tokens=None,
        n_random=0,
        seed=0,
    ):
        K = n_components
        self.n_samples = 0
        self.frequency = np.zeros(K, dtype=np.int64)
        self.sums = np.zeros(K)
        self.n_negative = np.zeros(K, dtype=np.int64)
        self.top = _TopN(K, n_top)
        self.hist = _DoublingHistogram(K, n_bins)
        self.steps = None if n_steps is None else np.zeros((K, n_steps), dtype=np.int64)
        self.pair_steps = pair_steps
        self.pairs = _PairSummary(K, max_partners) if pair_steps else None
        self.pair_frequency = np.zeros(K, dtype=np.int64)
        self.tokens = None if row_tokens is None else _TokenCounts(K, row_tokens)
        self.sample = _FiringSample(K, n_random, seed) if n_random else None

    def update(
        self, n_rows, rows, atoms, values, ordered_atoms=None, ordered_steps=None, pair_atoms=None
    ):
        """One chunk: nonzero codes as (row, atom, value) triples, rows counted from the
        chunk's first; ``ordered_atoms`` (n_rows, s), each row's atoms in selection order
        (-1: none), with the step of each in ``ordered_steps`` for matching pursuit;
        ``pair_atoms`` (n_rows, s'), the atoms whose pairs are counted, in order."""
        K = self.frequency.size
        offset = self.n_samples
        self.n_samples += n_rows
        self.frequency += np.bincount(atoms, minlength=K)
        self.sums += np.bincount(atoms, weights=values, minlength=K)
        self.n_negative += np.bincount(atoms[values < 0], minlength=K)
        self.top.update(rows + offset, atoms, values.astype(np.float64))
        self.hist.update(atoms, np.abs(values).astype(np.float64))
        if self.tokens is not None:
            self.tokens.add(atoms, rows + offset)
        if self.sample is not None:
            self.sample.update(rows + offset, atoms, values)
        if self.steps is not None and ordered_steps is not None:
            taken = ordered_atoms >= 0
            s = self.steps.shape[1]
            flat = ordered_atoms[taken] * s + ordered_steps[taken]
            self.steps += np.bincount(flat, minlength=K * s).reshape(K, s)
        if self.pairs is not None and pair_atoms is not None:
            head = pair_atoms[:, : self.pair_steps]
            self.pair_frequency += np.bincount(head[head >= 0], minlength=K)
            s = head.shape[1]
            a, b = np.triu_indices(s, 1)
            first, second = head[:, a].ravel(), head[:, b].ravel()
            ok = (first >= 0) & (second >= 0) & (first != second)
            self.pairs.add(first[ok], second[ok])


_DEFAULT_CHUNK = _TRANSFORM_CHUNK


def _statistics(
    estimator,
    X,
    n_top,
    n_bins,
    quantiles,
    pair_steps,
    chunk_size,
    verbose,
    threshold=0.0,
    max_partners=256,
    row_tokens=None,
    n_top_tokens=10,
    pair_min_cosine=0.0,
    n_random=0,
    seed=0,
):
    """The pass behind :func:`skmpsae.inspect.feature_statistics`."""

    from .._train.progress import Progress

    K = estimator.components_.shape[0]
    from .._models.matching_pursuit import MatchingPursuitSAE

    selection = isinstance(estimator, MatchingPursuitSAE)
    n_steps = None
    if selection:
        # The number of steps transform takes (None with transform_tol: all up to K).
        n_steps = estimator.transform_n_nonzero_coefs or estimator.n_nonzero_coefs
        if estimator.transform_tol is not None and estimator.transform_n_nonzero_coefs is None:
            n_steps = K
    acc = _Accumulator(
        K, n_top, n_bins, n_steps, pair_steps, max_partners, row_tokens, n_random, seed
    )
    progress = Progress(-(-X.shape[0] // chunk_size), "inspect", "chunk", bool(verbose))
    try:
        chunks = _iter_codes(
            estimator, X, chunk_size, selection, pair_steps, pair_min_cosine, threshold
        )
        for n_rows, codes, steps, pair_atoms in chunks:
            if steps is not None:
                indices, values = steps
                values = np.where(np.abs(values) > threshold, values, 0)
                codes = _sparse_steps(indices, values, K)
                ordered, order_steps = _first_selections(indices, values)
            else:
                if threshold > 0:
                    codes.data[np.abs(codes.data) <= threshold] = 0
                    codes.eliminate_zeros()
                ordered, order_steps = _by_value(codes, pair_steps or 1), None
                pair_atoms = ordered
            coo = codes.tocoo()
            acc.update(
                n_rows,
                coo.row.astype(np.int64),
                coo.col.astype(np.int64),
                coo.data,
                ordered,
                order_steps,
                pair_atoms,
            )
            progress.update()
    finally:
        progress.close()
    freq = acc.frequency
    fired = np.maximum(freq, 1)
    top_values = np.where(acc.top.rows >= 0, acc.top.values, 0.0)
    pair_counts, pair_error = (None, None) if acc.pairs is None else acc.pairs.matrix()
    top_tokens = (None, None) if acc.tokens is None else acc.tokens.top(n_top_tokens)
    random_rows, random_values = (None, None) if acc.sample is None else acc.sample.sample()
    return Bunch(
        n_samples=acc.n_samples,
        frequency=freq,
        firing_rate=freq / max(acc.n_samples, 1),
        mean_activation=np.where(freq > 0, acc.sums / fired, 0.0),
        max_activation=top_values[:, 0].copy(),
        quantile_levels=np.asarray(quantiles, dtype=float),
        quantiles=acc.hist.quantiles(quantiles),
        histogram=acc.hist.counts,
        histogram_edges=acc.hist.edges(),
        n_negative=acc.n_negative,
        top_rows=acc.top.rows,
        top_values=top_values,
        selection_steps=acc.steps,
        pair_counts=pair_counts,
        pair_error=pair_error,
        # Matching pursuit's tree counts its own selections (see _tree_selections).
        pair_frequency=acc.pair_frequency if selection and pair_steps else freq,
        ordered=bool(selection),
        top_tokens=top_tokens[0],
        top_token_counts=top_tokens[1],
        random_rows=random_rows,
        random_values=random_values,
    )


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "X": ["array-like"],
        "n_top": [NotBoolInterval(Integral, 1, None, closed="left")],
        "n_bins": [NotBoolInterval(Integral, 2, None, closed="left")],
        "quantiles": ["array-like"],
        "pair_steps": [NotBoolInterval(Integral, 0, None, closed="left")],
        "pair_min_cosine": [Interval(Real, 0, 1, closed="both")],
        "max_partners": [NotBoolInterval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 0, None, closed="left")],
        "row_tokens": [None, "array-like"],
        "n_random": [NotBoolInterval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
        "chunk_size": [NotBoolInterval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def feature_statistics(
    estimator,
    X,
    *,
    n_top=20,
    n_bins=64,
    quantiles=(0.1, 0.5, 0.9),
    pair_steps=8,
    pair_min_cosine=0.3,
    max_partners=256,
    threshold=0.0,
    row_tokens=None,
    n_random=0,
    random_state=None,
    chunk_size=_DEFAULT_CHUNK,
    verbose=0,
):
    """Per-atom statistics of a fitted SAE's codes over ``X``, in one streaming pass.

    Parameters
    ----------
    estimator : fitted SAE
        Any of the six estimators (or one loaded by :func:`skmpsae.io.load`).
    X : array-like of shape (n_samples, n_features)
        float32 or float64 rows, e.g. ``np.load("acts.npy", mmap_mode="r")``; read chunk by
        chunk.
    n_top : int, default=20
        Top-activating rows kept per atom.
    n_bins : int, default=64
        Histogram bins per atom (even: the range doubles by merging bins in pairs).
    quantiles : array-like of float, default=(0.1, 0.5, 0.9)
        Levels in [0, 1] of the quantiles of each atom's activation when firing.
    pair_steps : int, default=8
        Pairs of atoms are counted among the atoms each row selects in the first
        ``pair_steps`` steps of a matching pursuit over the model's dictionary, taken past the
        model's own ``n_nonzero_coefs`` if need be and cut by ``pair_min_cosine`` (an atom
        selected again counts once, at its first step), or, for the other encoders, among
        its ``pair_steps`` largest activations; 0 counts none.
        Their number grows as ``pair_steps**2`` per row.
    pair_min_cosine : float, default=0.3
        Matching pursuit only: a row's pairs stop at the first step whose atom has a cosine
        below this with the residual (``value / ||residual||``, as the model's
        ``min_cosine``): such a step fits the overlaps of the atoms already selected, not a
        feature of the row. 0 counts every step. The tree (:func:`atom_hierarchy`) is read
        off these pairs.
    max_partners : int, default=256
        Partners whose pair counts each atom keeps (a Misra-Gries summary), so that memory
        stays O(n_components x max_partners) however many distinct pairs the rows hold.
        An atom's counts are exact while it has fired with at most ``max_partners`` distinct
        atoms; otherwise each is low by at most ``pair_error`` for that atom, which is at
        most ``(pair_steps - 1) / (max_partners + 1)`` of the atom's firings, and every
        partner above that share is kept.
    threshold : float, default=0.0
        Codes of magnitude at most this count as not firing (matching pursuit run for a fixed
        number of steps selects atoms for a residual of float rounding once a row is
        reconstructed).
    row_tokens : array-like of shape (n_samples,), default=None
        The token id of each row (a capture's provenance): then each atom's ten most
        frequent tokens among its firings are counted.
    n_random : int, default=0
        Firings of each atom kept as a uniform random sample without replacement (all of
        them for an atom that fired at most ``n_random`` times): ``random_rows`` and
        ``random_values``. Memory O(n_components x n_random); the sample does not depend on
        ``chunk_size``.
    random_state : int, RandomState instance or None, default=None
        Draws the sample of ``n_random`` firings; an int makes it reproducible.
    chunk_size : int, default=4096
        Rows encoded at a time.
    verbose : int, default=0
        Show progress on stderr.

    Returns
    -------
    statistics : :class:`~sklearn.utils.Bunch`
        ``n_samples``; per atom (arrays of length n_components): ``frequency`` (rows where
        it is non-zero), ``firing_rate``, ``mean_activation`` and ``max_activation`` (when
        firing; 0 for a dead atom), ``n_negative`` (firings below zero); ``quantiles``
        (n_components, len(quantiles)) of the magnitude when firing, at
        ``quantile_levels``; ``histogram`` (n_components, n_bins) and ``histogram_edges``
        (n_components, n_bins + 1) of the magnitudes; ``top_rows`` and ``top_values``
        (n_components, n_top), largest first (row -1 and value 0 where an atom fired in fewer
        rows); ``selection_steps`` (n_components, n_steps), how often matching pursuit
        selected each atom at each step (None for other estimators); ``pair_counts``, a
        sparse (n_components, n_components) matrix counting rows where ``i`` fired before
        ``j`` (None if ``pair_steps=0``); ``pair_error`` (n_components,), how much lower
        than the truth each atom's pair counts may be (0: exact; see ``max_partners``);
        ``pair_frequency`` (n_components,), the rows whose pairs count the atom (for
        matching pursuit, among the selections cut by ``pair_min_cosine``; otherwise
        ``frequency``);
        ``ordered``, whether "before" is the pursuit's order; with ``row_tokens``,
        ``top_tokens`` and ``top_token_counts`` (n_components, 10), each atom's most
        frequent token ids among its firings (-1 pads) and how many firings each has (else
        None); with ``n_random``, ``random_rows`` and ``random_values`` (n_components,
        n_random), the sampled firings by increasing row (row -1 and value 0 pad; else
        None).

    See Also
    --------
    atom_hierarchy : Parents and children of atoms from ``pair_counts``.
    context_windows : The tokens around each top row.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.inspect import feature_statistics
    >>> X = np.random.RandomState(0).rand(300, 10).astype(np.float32)
    >>> sae = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=3, max_iter=2,
    ...                          random_state=0).fit(X)
    >>> stats = feature_statistics(sae, X, n_top=5)
    >>> stats.top_rows.shape, stats.selection_steps.shape
    ((16, 5), (16, 3))
    >>> int(stats.selection_steps.sum()) <= 300 * 3
    True
    """
    X = _check_rows(estimator, X)
    if n_bins % 2:
        raise ValueError(f"n_bins must be even (bins merge in pairs), got {n_bins}.")
    levels = np.asarray(quantiles, dtype=float).ravel()
    if levels.size == 0 or not np.all((levels >= 0) & (levels <= 1)):
        raise ValueError(f"quantiles must be levels in [0, 1], got {quantiles!r}.")
    if row_tokens is not None and np.asarray(row_tokens).size != X.shape[0]:
        raise ValueError(
            f"row_tokens has {np.asarray(row_tokens).size} ids for the {X.shape[0]} rows of X."
        )
    return _statistics(
        estimator,
        X,
        n_top,
        n_bins,
        levels,
        pair_steps,
        chunk_size,
        verbose,
        threshold,
        max_partners,
        None if row_tokens is None else np.asarray(row_tokens).ravel(),
        pair_min_cosine=pair_min_cosine,
        n_random=n_random,
        seed=check_random_state(random_state).randint(np.iinfo(np.int32).max) if n_random else 0,
    )
