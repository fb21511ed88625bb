"""Automated interpretability with pluggable models: explain latents from their activating
contexts, then score each explanation by detection (SAEBench's and delphi's protocol).

The explainer and the scorer are callables, so any local or remote language model can stand
behind them; the baselines shipped here (the top tokens, and "does the context contain one
of them") make the score a number offline and without a model.
"""

from collections import Counter
from numbers import Integral

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .._compat import HasMethods, validate_params
from .._metrics.probing import _check_rows, encode_rows
from .._utils import NotBoolInterval
from .contexts import _context_windows


def baseline_explainer(contexts):
    """The explanation "the latent fires on these tokens": the (at most 3) most frequent
    tokens at the centre of the activating contexts, space-separated, most frequent first."""
    counts = Counter(c["tokens"][c["centre"]].strip().lower() for c in contexts)
    counts.pop("", None)
    return " ".join(token for token, _ in counts.most_common(3))


def baseline_scorer(explanation, contexts):
    """Predicts that a context activates the latent when one of its tokens is a word of the
    explanation (case-insensitive)."""
    words = set(explanation.lower().split())
    return [any(t.strip().lower() in words for t in c["tokens"]) for c in contexts]


def _top_rows(codes, latents, n_top):
    """Per latent, the rows of its ``n_top`` largest codes (largest first, -1 padding)."""
    csc = codes[:, latents].tocsc()
    out = np.full((len(latents), n_top), -1, dtype=np.int64)
    for i in range(len(latents)):
        rows = csc.indices[csc.indptr[i] : csc.indptr[i + 1]]
        values = csc.data[csc.indptr[i] : csc.indptr[i + 1]]
        order = np.lexsort((rows, -values))[:n_top]  # ties: the earlier row
        out[i, : order.size] = rows[order]
    return out


def _contexts(rows, codes_column, tokens, texts, window):
    windows = _context_windows(rows, texts, window)
    contexts = []
    for row, context in zip(rows, windows, strict=True):
        kept = context[context >= 0]
        contexts.append(
            {
                "tokens": [str(tokens[r]) for r in kept],
                "centre": int(np.flatnonzero(kept == row)[0]),
                "activation": float(codes_column[row]),
            }
        )
    return contexts


def _prepare(estimator, X, tokens, texts, chunk_size):
    X = _check_rows(estimator, X)
    tokens = np.asarray(tokens, dtype=object).ravel()
    if tokens.size != X.shape[0]:
        raise ValueError(f"tokens must have one entry per row of X ({X.shape[0]}).")
    texts = np.zeros(X.shape[0], np.int64) if texts is None else np.asarray(texts).ravel()
    if texts.size != X.shape[0]:
        raise ValueError(f"texts must have one entry per row of X ({X.shape[0]}).")
    return encode_rows(estimator, X, chunk_size=chunk_size).tocsc(), tokens, texts


_COMMON = {
    "estimator": [HasMethods(["transform"])],
    "X": ["array-like"],
    "tokens": ["array-like"],
    "texts": ["array-like", None],
    "n_examples": [NotBoolInterval(Integral, 1, None, closed="left")],
    "window": [NotBoolInterval(Integral, 0, None, closed="left")],
    "random_state": ["random_state"],
    "chunk_size": [NotBoolInterval(Integral, 1, None, closed="left")],
}


@validate_params(
    {
        **_COMMON,
        "latents": ["array-like", None],
        "n_latents": [NotBoolInterval(Integral, 1, None, closed="left")],
        "explainer": [callable, None],
    },
    prefer_skip_nested_validation=True,
)
def explain(
    estimator,
    X,
    tokens,
    texts=None,
    *,
    latents=None,
    n_latents=50,
    n_examples=10,
    window=8,
    explainer=None,
    random_state=None,
    chunk_size=4096,
):
    """Explain latents from their top-activating contexts.

    Parameters
    ----------
    estimator : fitted estimator with ``transform`` and ``components_``
        Any of the package's SAEs, or a scikit-learn dictionary learner.
    X : array-like of shape (n_samples, n_features)
        Activation rows.
    tokens : array-like of str of shape (n_samples,)
        Each row's token text (``ACTS.npy.vocab.json`` of column 2 of the provenance).
    texts : array-like of int of shape (n_samples,), default=None
        Each row's text (column 0 of the provenance): contexts never cross texts. None: one
        text.
    latents : array-like of int, default=None
        The latents to explain. None: ``n_latents`` drawn at random among those active on at
        least ``2 * n_examples`` rows (enough to explain and then to score).
    n_latents : int, default=50
        How many latents to draw when ``latents`` is None.
    n_examples : int, default=10
        Activating contexts shown to the explainer: the latent's top ``n_examples`` rows.
    window : int, default=8
        Tokens of context on each side of the activating token.
    explainer : callable, default=None
        ``explainer(contexts) -> str``; ``contexts`` is a list of dicts with ``tokens``
        (list of str), ``centre`` (the index of the activating token) and ``activation``.
        None: :func:`baseline_explainer` (the most frequent activating tokens).
    random_state : int, RandomState instance or None, default=None
        The draw of latents.
    chunk_size : int, default=4096
        Rows encoded at a time.

    Returns
    -------
    explanations : dict
        Latent index -> explanation.

    See Also
    --------
    score_explanations : Detection score of these explanations.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.inspect import explain
    >>> X = np.random.RandomState(0).randn(300, 6)
    >>> tokens = np.array([" a", " b", " c"] * 100)
    >>> sae = MatchingPursuitSAE(8, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    >>> explanations = explain(sae, X, tokens, latents=[0, 1], n_examples=5)
    >>> sorted(explanations)
    [0, 1]
    """
    codes, tokens, texts = _prepare(estimator, X, tokens, texts, chunk_size)
    if latents is None:
        counts = np.diff(codes.indptr)
        alive = np.flatnonzero(counts >= 2 * n_examples)
        if alive.size == 0:
            raise ValueError(
                f"no latent is active on {2 * n_examples} rows: too few rows to explain "
                "and score (lower n_examples)."
            )
        rng = check_random_state(random_state)
        latents = np.sort(rng.choice(alive, min(n_latents, alive.size), replace=False))
    latents = np.asarray(latents, dtype=np.int64).ravel()
    if latents.size and (latents.min() < 0 or latents.max() >= codes.shape[1]):
        raise ValueError(f"latents must lie in [0, {codes.shape[1]}).")
    explainer = baseline_explainer if explainer is None else explainer
    top = _top_rows(codes, latents, n_examples)
    explanations = {}
    for latent, rows in zip(latents, top, strict=True):
        column = codes[:, latent].toarray().ravel()
        contexts = _contexts(rows[rows >= 0], column, tokens, texts, window)
        explanations[int(latent)] = str(explainer(contexts)) if contexts else ""
    return explanations


@validate_params(
    {**_COMMON, "explanations": [dict], "scorer": [callable, None]},
    prefer_skip_nested_validation=True,
)
def score_explanations(
    estimator,
    X,
    tokens,
    texts=None,
    explanations=None,
    *,
    n_examples=10,
    window=8,
    scorer=None,
    random_state=None,
    chunk_size=4096,
):
    """Detection score of latent explanations: can the scorer tell activating contexts from
    random ones, given the explanation alone?

    For each latent, ``n_examples`` activating contexts that the explainer did not see (the
    latent's rows ranked ``n_examples`` to ``2 * n_examples - 1``) and as many random
    contexts centred on rows where the latent is silent, shuffled; the score is the fraction
    the scorer classifies right (0.5 is chance).

    Parameters
    ----------
    estimator, X, tokens, texts, n_examples, window, random_state, chunk_size
        As for :func:`explain`; pass the same ``n_examples``, so that the scored contexts are
        not the explained ones.
    explanations : dict
        Latent index -> explanation, as :func:`explain` returns.
    scorer : callable, default=None
        ``scorer(explanation, contexts) -> sequence of bool`` (one per context, True for
        "activates"); ``contexts`` are dicts with ``tokens`` and ``centre`` (no activation).
        None: :func:`baseline_scorer` (a context activates if it contains a word of the
        explanation).

    Returns
    -------
    result : Bunch
        ``score`` (mean over latents), ``scores`` (per latent, in ``latents`` order),
        ``latents``, ``n_contexts`` (contexts scored per latent).

    See Also
    --------
    explain : The explanations scored here.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.inspect import explain, score_explanations
    >>> X = np.random.RandomState(0).randn(300, 6)
    >>> tokens = np.array([" a", " b", " c"] * 100)
    >>> sae = MatchingPursuitSAE(8, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    >>> explanations = explain(sae, X, tokens, latents=[0, 1], n_examples=5)
    >>> result = score_explanations(sae, X, tokens, None, explanations, n_examples=5)
    >>> 0.0 <= result.score <= 1.0
    True
    """
    if not explanations:
        raise ValueError("explanations is empty: nothing to score (see explain).")
    codes, tokens, texts = _prepare(estimator, X, tokens, texts, chunk_size)
    scorer = baseline_scorer if scorer is None else scorer
    rng = check_random_state(random_state)
    latents = np.array(sorted(explanations), dtype=np.int64)
    if latents.min() < 0 or latents.max() >= codes.shape[1]:
        raise ValueError(f"explanations' latents must lie in [0, {codes.shape[1]}).")
    top = _top_rows(codes, latents, 2 * n_examples)[:, n_examples:]
    scores, n_contexts = np.zeros(latents.size), np.zeros(latents.size, dtype=np.int64)
    for i, latent in enumerate(latents):
        column = codes[:, latent].toarray().ravel()
        active = top[i][top[i] >= 0]
        silent = np.flatnonzero(column == 0)
        n = min(active.size, silent.size)
        if n == 0:
            raise ValueError(
                f"latent {latent} has no held-out activating context (or never stays "
                "silent): it cannot be scored; score latents drawn by explain."
            )
        rows = np.r_[active[:n], rng.choice(silent, n, replace=False)]
        truth = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        order = rng.permutation(rows.size)  # the scorer must not learn from the order
        contexts = _contexts(rows[order], column, tokens, texts, window)
        shown = [{"tokens": c["tokens"], "centre": c["centre"]} for c in contexts]
        predicted = np.asarray(scorer(explanations[int(latent)], shown), dtype=bool)
        if predicted.shape != (rows.size,):
            raise ValueError(
                f"scorer returned {predicted.shape} predictions for {rows.size} contexts."
            )
        scores[i] = np.mean(predicted == truth[order])
        n_contexts[i] = rows.size
    return Bunch(score=float(scores.mean()), scores=scores, latents=latents, n_contexts=n_contexts)
