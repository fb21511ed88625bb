"""Context windows around activating rows, the atom's activation over them, and the atoms'
direct effect on a language model's next-token logits."""

from numbers import Integral

import numpy as np
import torch
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from .._compat import HasMethods, validate_params
from .._train.tensors import _as_tensor
from .._utils import NotBoolInterval
from .inputs import _ESTIMATOR, _check_rows
from .stats import _DEFAULT_CHUNK


def _context_windows(rows, texts, window):
    """Rows ``r - window .. r + window`` of the same text as ``r`` (-1 outside it or for
    ``r = -1``); ``texts`` is the text index of every row (rows of a text are contiguous)."""
    rows = np.asarray(rows, dtype=np.int64)
    offsets = np.arange(-window, window + 1)
    out = rows[..., None] + offsets
    n = texts.shape[0]
    valid = (rows[..., None] >= 0) & (out >= 0) & (out < n)
    safe = np.clip(out, 0, n - 1)
    centre = np.clip(rows, 0, n - 1)
    valid &= (
        np.asarray(texts[safe.ravel()]).reshape(safe.shape)
        == np.asarray(texts[centre.ravel()]).reshape(centre.shape)[..., None]
    )
    return np.where(valid, out, -1)


def _context_activations(estimator, X, rows, atoms, chunk_size):
    """``codes[rows[..., t], atoms[...]]`` for every context row (0 for -1), encoding each
    distinct row once, chunk by chunk.

    The entries are visited in row order (one argsort), so that each chunk of distinct rows
    is encoded once and its entries are a contiguous run: besides the output, two arrays of
    the entries' size, where a mask per chunk and copies of the rows and atoms would take
    several (the report shades n_components x contexts x window entries, 10M by default at
    16,384 atoms)."""
    rows = np.asarray(rows, dtype=np.int64)
    width = rows.shape[-1] if rows.ndim else 1
    atoms = np.asarray(atoms, dtype=np.int64).ravel()
    out = np.zeros(rows.shape)
    flat_out = out.reshape(-1)
    order = np.argsort(rows, axis=None, kind="stable")
    sorted_rows = rows.reshape(-1)[order]
    first = int(np.searchsorted(sorted_rows, 0))  # -1 entries come first and stay 0
    starts = first + np.flatnonzero(np.diff(sorted_rows[first:], prepend=-1) != 0)
    params = estimator._params_as_tensors(X.dtype)
    device = params["components_"].device
    for b in range(0, starts.size, chunk_size):
        lo = starts[b]
        hi = starts[b + chunk_size] if b + chunk_size < starts.size else sorted_rows.size
        block = sorted_rows[starts[b : b + chunk_size]]
        chunk = _as_tensor(np.asarray(X[block]), None, device)
        with torch.no_grad():
            codes = estimator._encode_sparse(chunk, params).tocsr()
        local = np.searchsorted(block, sorted_rows[lo:hi])
        entries = order[lo:hi]
        flat_out[entries] = np.asarray(codes[local, atoms[entries // width]]).ravel()
    return out


def _unembedding_matrix(unembedding):
    """(vocab, n_features) float tensor from an array or a model with output embeddings."""
    if isinstance(unembedding, torch.nn.Module):
        head = getattr(unembedding, "get_output_embeddings", lambda: None)()
        if head is None or not hasattr(head, "weight"):
            raise ValueError(
                f"unembedding: this {type(unembedding).__name__} has no output embeddings "
                "(get_output_embeddings()); logit effects need a language model's unembedding."
            )
        return head.weight.detach().to("cpu", torch.float32)
    return torch.as_tensor(np.asarray(unembedding, dtype=np.float32))


def _logit_effects(components, W_U, n_top, block=256):
    """Per atom, the ``n_top`` tokens whose logit ``components[i] @ W_U.T`` is largest and
    smallest, blockwise so that no (n_components, vocab) matrix is held."""
    D = torch.as_tensor(np.asarray(components, dtype=np.float32))
    K, n_top = D.shape[0], min(n_top, W_U.shape[0])
    top_ids = np.zeros((K, n_top), dtype=np.int64)
    top_vals = np.zeros((K, n_top), dtype=np.float32)
    low_ids, low_vals = top_ids.copy(), top_vals.copy()
    with torch.no_grad():
        for start in range(0, K, block):
            logits = D[start : start + block] @ W_U.T
            v, i = torch.topk(logits, n_top, dim=1)
            top_ids[start : start + block], top_vals[start : start + block] = i, v
            v, i = torch.topk(logits, n_top, dim=1, largest=False)
            low_ids[start : start + block], low_vals[start : start + block] = i, v
    return top_ids, top_vals, low_ids, low_vals


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
