"""What each atom responds to: top-activating rows and their contexts, firing statistics,
effects on a language model's logits, and matching pursuit's hierarchy of atoms.

Every function streams over the rows (a ``numpy.memmap`` is read chunk by chunk, never copied)
and keeps O(n_components x n_top) per-atom state; the numbers are exact, except the quantiles,
which are read off each atom's histogram (to within one bin, at most ``2 * max / n_bins``).
Works for the six estimators. ``skmpsae report`` turns the results into a feature browser.

Matching pursuit selects atoms one after another; :func:`feature_statistics` records the step
at which each atom is selected and how often atom ``j`` is selected after atom ``i`` in the
same row, and :func:`atom_hierarchy` turns that into a parent -> children tree (the MP-SAE
paper's claim: a parent is selected before its children). For the other encoders the pairs
are unordered co-activations.
"""

import os
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, validate_params
from sklearn.utils.validation import check_is_fitted

from ._inspect.contexts import (
    _context_activations,
    _context_windows,
    _logit_effects,
    _unembedding_matrix,
)
from ._inspect.stats import _DEFAULT_CHUNK, _statistics
from ._inspect.tree import _hierarchy, _recovery
from ._utils import NotBoolInterval


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


__all__ = [
    "atom_hierarchy",
    "context_activations",
    "context_windows",
    "feature_statistics",
    "hierarchy_recovery",
    "logit_effects",
    "write_report",
]

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


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "X": ["array-like"],
        "n_top": [NotBoolInterval(Integral, 1, None, closed="left")],
        "n_bins": [NotBoolInterval(Integral, 2, None, closed="left")],
        "quantiles": ["array-like"],
        "pair_steps": [NotBoolInterval(Integral, 0, None, closed="left")],
        "threshold": [Interval(Real, 0, None, closed="left")],
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
    threshold=0.0,
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
        Pairs of atoms are counted among the atoms each row selects in its first
        ``pair_steps`` pursuit steps (an atom selected again counts once, at its first step),
        or, for the other encoders, among its ``pair_steps`` largest activations; 0 counts
        none.
        Their number grows as ``pair_steps**2`` per row.
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
        ``j`` (None if ``pair_steps=0``); ``ordered``, whether "before" is the pursuit's
        order.

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
    return _statistics(
        estimator, X, n_top, n_bins, levels, pair_steps, chunk_size, verbose, threshold
    )


@validate_params(
    {
        "statistics": [Bunch, dict],
        "min_probability": [Interval(Real, 0, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def atom_hierarchy(statistics, *, min_probability=0.5):
    """A parent -> children tree of atoms from the pairs counted by :func:`feature_statistics`.

    The parent of atom ``j`` is the atom ``i`` that fires more often than ``j`` and maximises
    ``P(i | j)``, the share of the rows where ``j`` fires in which ``i`` fires too (matching
    pursuit: is selected in the same pursuit; other encoders: is active, i.e. co-activation).
    It is kept if that share is at least ``min_probability``. For matching pursuit,
    ``parent_first`` then says in what share of those rows the parent was selected at an
    earlier step than the child (the MP-SAE paper's "parent before child").

    Parameters
    ----------
    statistics : Bunch
        The result of :func:`feature_statistics` with ``pair_steps > 0``.
    min_probability : float, default=0.5
        Smallest conditional probability that makes ``i`` the parent of ``j``.

    Returns
    -------
    hierarchy : :class:`~sklearn.utils.Bunch`
        ``parent`` (n_components,), the parent atom or -1; ``probability`` (n_components,),
        the best candidate's conditional probability (whether kept or not);
        ``parent_first`` (n_components,), for matching pursuit the share of co-selections
        where the parent came first (0 without a parent; None for other encoders);
        ``children``, a
        list of arrays, the children of each atom; ``conditional``, the sparse matrix of
        ``P(i | j)`` over the admissible pairs.

    See Also
    --------
    hierarchy_recovery : Score the tree against a known one.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.inspect import atom_hierarchy, feature_statistics
    >>> X = np.random.RandomState(0).rand(300, 10).astype(np.float32)
    >>> sae = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=3, max_iter=2,
    ...                          random_state=0).fit(X)
    >>> tree = atom_hierarchy(feature_statistics(sae, X))
    >>> tree.parent.shape
    (16,)
    """
    counts = statistics.get("pair_counts")
    if counts is None:
        raise ValueError(
            "statistics has no pair_counts: compute them with feature_statistics(pair_steps>0)."
        )
    parent, probability, parent_first, conditional = _hierarchy(
        np.asarray(statistics["frequency"]), counts, bool(statistics["ordered"]), min_probability
    )
    children = [np.flatnonzero(parent == i) for i in range(parent.size)]
    return Bunch(
        parent=parent,
        probability=probability,
        parent_first=parent_first if statistics["ordered"] else None,
        children=children,
        conditional=conditional,
    )


@validate_params(
    {
        "components": ["array-like"],
        "parent": ["array-like"],
        "features": ["array-like"],
        "true_parent": ["array-like"],
    },
    prefer_skip_nested_validation=True,
)
def hierarchy_recovery(components, parent, features, true_parent):
    """How much of a known feature tree a tree of atoms recovers.

    Atoms are matched one to one to the true features (largest total absolute cosine, Hungarian
    algorithm); a true link ``p -> c`` is recovered when the atom matched to ``c`` has the atom
    matched to ``p`` as its parent.

    Parameters
    ----------
    components : array-like of shape (n_components, n_features)
        The atoms.
    parent : array-like of shape (n_components,)
        Each atom's parent (-1: none), e.g. ``atom_hierarchy(...).parent``.
    features : array-like of shape (n_true, n_features)
        The true feature directions.
    true_parent : array-like of shape (n_true,)
        Each true feature's parent (-1: none), e.g. ``tree.parent_of`` from
        :func:`skmpsae.datasets.make_hierarchical_features`.

    Returns
    -------
    recall : float
        Share of the true links recovered.
    precision : float
        Share of the links predicted between matched atoms that are true (0 if none).
    match_cosine : float
        Mean absolute cosine of the matched (feature, atom) pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.inspect import hierarchy_recovery
    >>> F = np.eye(3)
    >>> hierarchy_recovery(F, [-1, 0, 0], F, [-1, 0, 0])
    (1.0, 1.0, 1.0)
    """
    components = np.asarray(components, dtype=float)
    features = np.asarray(features, dtype=float)
    parent = np.asarray(parent).astype(np.int64)
    true_parent = np.asarray(true_parent).astype(np.int64)
    if components.ndim != 2 or features.ndim != 2 or components.shape[1] != features.shape[1]:
        raise ValueError(
            f"components {components.shape} and features {features.shape} must be 2-D with "
            "the same number of columns."
        )
    if parent.shape != (components.shape[0],) or true_parent.shape != (features.shape[0],):
        raise ValueError("parent and true_parent need one entry per atom and per feature.")
    if components.shape[0] < features.shape[0]:
        raise ValueError(
            f"{components.shape[0]} atoms cannot be matched one to one to "
            f"{features.shape[0]} features."
        )
    recall, precision, cosine = _recovery(components, parent, features, true_parent)
    return float(recall), float(precision), cosine


@validate_params(
    {
        "rows": ["array-like"],
        "texts": ["array-like"],
        "window": [NotBoolInterval(Integral, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def context_windows(rows, texts, *, window=8):
    """The rows around each given row that come from the same text.

    Parameters
    ----------
    rows : array-like of int
        Row numbers, any shape (e.g. ``top_rows``); -1 entries stay -1.
    texts : array-like of shape (n_samples,)
        The text index of every row, rows of a text contiguous and in order, e.g. column 0 of
        the ``ACTS.npy.tokens.npy`` file that :func:`skmpsae.activations.capture` writes.
    window : int, default=8
        Rows kept on each side.

    Returns
    -------
    context : ndarray of shape rows.shape + (2 * window + 1,)
        ``rows - window .. rows + window``, -1 where that row is outside the text.

    Examples
    --------
    >>> from skmpsae.inspect import context_windows
    >>> context_windows([1, 3], [0, 0, 0, 1, 1], window=1).tolist()
    [[0, 1, 2], [-1, 3, 4]]
    """
    texts = texts if hasattr(texts, "shape") else np.asarray(texts)
    return _context_windows(rows, texts, window)


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "X": ["array-like"],
        "rows": ["array-like"],
        "atoms": ["array-like"],
        "chunk_size": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def context_activations(estimator, X, rows, atoms, *, chunk_size=_DEFAULT_CHUNK):
    """The code of one atom at each of several rows: ``transform(X[rows])[..., atoms]``.

    Each distinct row is encoded once, however many windows it appears in.

    Parameters
    ----------
    estimator : fitted SAE
    X : array-like of shape (n_samples, n_features)
    rows : array-like of int of shape (..., width)
        Rows to read, e.g. :func:`context_windows`; -1 entries give 0.
    atoms : array-like of int of shape rows.shape[:-1]
        The atom of each window.
    chunk_size : int, default=4096
        Rows encoded at a time.

    Returns
    -------
    activations : ndarray of float64, shape rows.shape

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import TopKSAE
    >>> from skmpsae.inspect import context_activations
    >>> X = np.random.RandomState(0).rand(100, 6).astype(np.float32)
    >>> sae = TopKSAE(n_components=8, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    >>> a = context_activations(sae, X, [[0, 1, -1]], [3])
    >>> bool(np.allclose(a[0, :2], sae.transform(X[:2])[:, 3])), float(a[0, 2])
    (True, 0.0)
    """
    X = _check_rows(estimator, X)
    rows = np.asarray(rows, dtype=np.int64)
    atoms = np.asarray(atoms, dtype=np.int64)
    if rows.ndim < 1 or atoms.shape != rows.shape[:-1]:
        raise ValueError(f"atoms must have shape rows.shape[:-1] = {rows.shape[:-1]}.")
    if rows.size and (rows.max() >= X.shape[0] or rows.min() < -1):
        raise ValueError(f"rows must be in [-1, {X.shape[0]}).")
    if atoms.size and (atoms.min() < 0 or atoms.max() >= estimator.components_.shape[0]):
        raise ValueError(f"atoms must be in [0, {estimator.components_.shape[0]}).")
    return _context_activations(estimator, X, rows, atoms, chunk_size)


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "unembedding": ["array-like", HasMethods(["get_output_embeddings"])],
        "n_top": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def logit_effects(estimator, unembedding, *, n_top=10):
    """Each atom's direct effect on next-token logits: ``components_ @ W_U.T``.

    The logit change that adding one unit of the atom to the residual stream would cause if it
    went straight to the unembedding (the final normalisation ignored), as SAE dashboards show
    it. Meaningful for an SAE on a language model's residual stream.

    Parameters
    ----------
    estimator : fitted SAE
    unembedding : array-like of shape (vocab_size, n_features) or transformers model
        ``W_U``, or a model whose ``get_output_embeddings()`` has it (a ``...ForCausalLM``).
    n_top : int, default=10
        Tokens kept per atom and direction.

    Returns
    -------
    effects : :class:`~sklearn.utils.Bunch`
        ``promoted`` and ``suppressed`` token ids, (n_components, n_top), and their logit
        changes ``promoted_logits`` (descending) and ``suppressed_logits`` (ascending).

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import TopKSAE
    >>> from skmpsae.inspect import logit_effects
    >>> X = np.random.RandomState(0).rand(100, 6).astype(np.float32)
    >>> sae = TopKSAE(n_components=8, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    >>> effects = logit_effects(sae, np.eye(6), n_top=2)
    >>> effects.promoted.shape
    (8, 2)
    """
    check_is_fitted(estimator)
    W_U = _unembedding_matrix(unembedding)
    width = estimator.components_.shape[1]
    if W_U.ndim != 2 or W_U.shape[1] != width:
        raise ValueError(
            f"unembedding has shape {tuple(W_U.shape)}, expected (vocab_size, {width}) to "
            "match the model's atoms."
        )
    top_ids, top_vals, low_ids, low_vals = _logit_effects(estimator.components_, W_U, n_top)
    return Bunch(
        promoted=top_ids,
        promoted_logits=top_vals,
        suppressed=low_ids,
        suppressed_logits=low_vals,
    )


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "X": ["array-like", str, os.PathLike],
        "output": [str, os.PathLike],
        "tokenizer": [None, HasMethods(["decode", "convert_ids_to_tokens"])],
        "unembedding": [None, "array-like", HasMethods(["get_output_embeddings"])],
        "image_shape": [None, tuple, list],
        "n_top": [NotBoolInterval(Integral, 1, None, closed="left")],
        "window": [NotBoolInterval(Integral, 0, None, closed="left")],
        "min_probability": [Interval(Real, 0, 1, closed="both")],
        "pair_steps": [NotBoolInterval(Integral, 0, None, closed="left")],
        "n_logits": [NotBoolInterval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 0, None, closed="left")],
        "force": ["boolean"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def write_report(
    estimator,
    X,
    output,
    *,
    tokenizer=None,
    unembedding=None,
    image_shape=None,
    n_top=20,
    window=8,
    min_probability=0.5,
    pair_steps=8,
    n_logits=10,
    threshold=0.0,
    force=False,
    verbose=0,
):
    """Write a feature browser: a static site that opens from ``file://`` in any browser.

    ``output/index.html`` lists every atom (sortable by firing rate, mean activation, mean
    matching-pursuit step; searchable by atom id and by token); each atom's page shows its
    top-activating contexts with each token highlighted by the atom's activation there, the
    histogram of its activations, its direct logit effects, and its parent and children. No
    server and no network: every script and style is inside the folder, and the atoms' data
    comes in chunks loaded as they are opened. The statistics take one pass over ``X``
    (:func:`feature_statistics`), the context highlights one encoding of the distinct rows
    of the top contexts.

    Parameters
    ----------
    estimator : fitted SAE
    X : str, path-like or array-like of shape (n_samples, n_features)
        The rows, or the path of an ``ACTS.npy`` file written by
        :func:`skmpsae.activations.capture`: its ``ACTS.npy.tokens.npy`` (text, position and
        token of each row) and ``ACTS.npy.vocab.json`` (token texts) are then read, and the
        contexts show tokens; otherwise they show row numbers.
    output : str or path-like
        The report folder. An existing report there is replaced; any other non-empty folder
        only with ``force=True``.
    tokenizer : transformers tokenizer, default=None
        Decodes token ids (instead of ``ACTS.npy.vocab.json``), and names the logit effects'
        tokens.
    unembedding : array-like of shape (vocab_size, n_features) or model, default=None
        For the direct logit effects (see :func:`logit_effects`); None: none shown.
    image_shape : tuple of int, default=None
        For image rows (e.g. ``(28, 28)`` for MNIST): each atom's page draws the atom and its
        top images instead of token contexts.
    n_top : int, default=20
        Contexts per atom.
    window : int, default=8
        Tokens shown on each side of the activating token.
    min_probability : float, default=0.5
        See :func:`atom_hierarchy`.
    pair_steps : int, default=8
        See :func:`feature_statistics`; 0 skips the hierarchy.
    n_logits : int, default=10
        Promoted and suppressed tokens shown per atom.
    threshold : float, default=0.0
        See :func:`feature_statistics`.
    force : bool, default=False
        Replace a non-empty ``output`` that is not a report.
    verbose : int, default=0
        Progress on stderr.

    Returns
    -------
    path : pathlib.Path
        ``output``; open ``path / "index.html"``.

    See Also
    --------
    feature_statistics, atom_hierarchy, logit_effects

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.inspect import write_report
    >>> X = np.random.RandomState(0).rand(300, 10).astype(np.float32)
    >>> sae = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=3, max_iter=2,
    ...                          random_state=0).fit(X)
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "report"
    >>> sorted(p.name for p in write_report(sae, X, folder).iterdir())
    ['data', 'index.html', 'skmpsae-report.json', 'static']
    """
    from pathlib import Path

    from ._activations.provenance import Provenance, _marks_spaces, _token_text
    from ._inspect.report import _check_output, _contexts, _images, _write
    from ._train.progress import Progress

    _check_output(output, force)
    provenance, source = None, ""
    if isinstance(X, (str, os.PathLike)):
        source = Path(X).name
        path = X
        X = _load_acts(path)
        provenance = Provenance.read(path, X.shape[0], tokenizer)
    X = _check_rows(estimator, X)
    if image_shape is not None:
        image_shape = tuple(int(n) for n in image_shape)
        if len(image_shape) != 2 or int(np.prod(image_shape)) != X.shape[1]:
            raise ValueError(
                f"image_shape must be (height, width) with height * width = {X.shape[1]}, "
                f"got {image_shape}."
            )
    stats = feature_statistics(
        estimator, X, n_top=n_top, pair_steps=pair_steps, threshold=threshold, verbose=verbose
    )
    hierarchy = None
    if stats.pair_counts is not None:
        hierarchy = atom_hierarchy(stats, min_probability=min_probability)
    stages = Progress(3, "report", "stage", bool(verbose))
    try:
        if image_shape is None:
            contexts = _contexts(estimator, X, stats, provenance, window, _DEFAULT_CHUNK)
            images = None
        else:
            contexts = _contexts(estimator, X, stats, None, 0, _DEFAULT_CHUNK)
            images = _images(estimator, X, stats, image_shape)
        stages.update("contexts")
        logits = None
        if unembedding is not None:
            effects = logit_effects(estimator, unembedding, n_top=n_logits)
            vocab = provenance.vocab if provenance is not None else None
            marks = None if tokenizer is None else _marks_spaces(tokenizer)

            def name(token):
                if tokenizer is not None:
                    return _token_text(tokenizer, int(token), marks)
                if vocab is not None and int(token) in vocab:
                    return vocab[int(token)]
                return f"#{int(token)}"

            logits = [
                (
                    [(name(t), v) for t, v in zip(up, upv, strict=True)],
                    [(name(t), v) for t, v in zip(down, downv, strict=True)],
                )
                for up, upv, down, downv in zip(
                    effects.promoted,
                    effects.promoted_logits,
                    effects.suppressed,
                    effects.suppressed_logits,
                    strict=True,
                )
            ]
        stages.update("logit effects")
        meta = {
            "estimator": type(estimator).__name__,
            "n_components": int(estimator.components_.shape[0]),
            "n_samples": int(X.shape[0]),
            "source": source,
            "ordered": bool(stats.ordered),
            "has_tokens": bool(provenance is not None and provenance.table is not None),
            "image_shape": list(image_shape) if image_shape else None,
        }
        out = _write(
            output,
            meta=meta,
            stats=stats,
            hierarchy=hierarchy,
            contexts=contexts,
            logits=logits,
            images=images,
            force=force,
        )
        stages.update("written")
    finally:
        stages.close()
    return out
