"""Pursuit kernels: matching pursuit and orthogonal matching pursuit, batched in torch.

Both encoders work in the Gram formulation (Rubinstein, Zibulevsky & Elad 2008, "Batch-OMP"):
one GEMM gives the first correlations ``c = (X - b) D^T``, after which every step only reads a
row of the Gram matrix ``G = D D^T`` per sample, so a step costs O(n_components) per sample and
nothing in ``n_features``. Matching pursuit's atom selection, and how it avoids the whole Gram
matrix at large n_components, is in ``selection.py``, and the differentiable coefficients that
training recomputes from the selected atoms in ``grad.py``; this module has batched
OMP, decoding and the public functions.

The public functions take and return numpy arrays; the underscored helpers take torch tensors
and are what the estimators call on their device. Every selection returns a sparse code, the
atoms and the values of each step, shape (n, k); nothing here builds a dense (n, K) code.
"""

import numbers

import numpy as np
import torch
from scipy import sparse
from sklearn.utils import check_array

from .._compat import Interval, validate_params
from .._utils import ARRAY_OR_SPARSE, NotBoolInterval
from .gram import (
    _DEFAULT_MAX_BYTES,
    _DEVICE_CHUNK_BYTES,
    _OMP_CHUNK_BYTES,
    _BlockArgmax,
)
from .selection import _gram_source, _select_mp

__all__ = ["matching_pursuit", "orthogonal_matching_pursuit"]


def _decode_selected(indices, values, dictionary):
    """``sum_t values[:, t] * dictionary[indices[:, t]]`` without a dense (n, K) code matrix."""
    return torch.nn.functional.embedding_bag(
        indices, dictionary, per_sample_weights=values, mode="sum"
    )


def _select_omp(
    X,
    dictionary,
    n_nonzero_coefs,
    positive=False,
    tol=None,
    gram=None,
    *,
    max_bytes=_DEFAULT_MAX_BYTES,
):
    """Batched orthogonal matching pursuit in the Gram formulation (Batch-OMP).

    The selected atoms are orthonormalised as they come (Gram-Schmidt, i.e. a Cholesky factor
    ``L`` of ``G_SS`` grown by one row per step): ``w_t = D q_t``, the correlations of every atom
    with the new direction ``q_t``, costs one row of the Gram matrix and a (t, K) product, and
    the residual's correlations then drop by ``(r . q_t) w_t``. The Cholesky row is read off the
    earlier ``w_s`` at the new atom, so no step solves a system; the coefficients come from one
    triangular solve at the end. A sample stops at ``tol``, when no correlation is left, or when
    the next atom is (numerically) in the span of those selected; the steps it did not take form
    a suffix and get identity rows in ``L``.

    Gram rows come from the cached ``gram``, or from the whole matrix or rows computed as atoms
    are first selected, whichever is cheaper within ``max_bytes`` (which also bounds the chunk's
    (k + 2, rows, n_components) state).

    Returns the selected ``indices`` and their least-squares ``values``, shape (n, k), the
    steps not taken having value 0.
    """
    with torch.no_grad():
        n, n_components = X.shape[0], dictionary.shape[0]
        k, device, dtype = n_nonzero_coefs, X.device, X.dtype
        eps = torch.finfo(dtype).eps
        indices = torch.zeros((n, k), dtype=torch.long, device=device)
        values = torch.zeros((n, k), dtype=dtype, device=device)
        if n == 0 or k == 0:
            return indices, values
        per_row = (k + 2) * n_components * X.element_size()
        if per_row > max_bytes // 2:
            raise ValueError(
                f"The memory budget of {max_bytes / 2**20:.3g} MiB (cache_size) cannot hold "
                f"one sample's OMP state ({per_row / 2**20:.3g} MiB: k + 2 = {k + 2} rows of "
                f"n_components={n_components}); raise cache_size to at least "
                f"{2 * per_row / 2**20:.3g} MiB."
            )
        chunk = _OMP_CHUNK_BYTES if device.type == "cpu" else _DEVICE_CHUNK_BYTES
        chunk = max(1, min(n, min(chunk, max_bytes // 2) // per_row))
        if gram is None:
            budget = max_bytes - chunk * per_row
            source = _gram_source(dictionary, n, k, chunk, budget)
        else:
            source = _gram_source(dictionary, n, k, chunk, 0, gram)
        argmax = _BlockArgmax(n_components, signed=not positive, device=device)
        can_sync = device.type == "cpu"
        # Step-major, so that each step writes its direction in place, contiguously; allocated
        # once, as first touching fresh pages costs more than a step's arithmetic.
        directions_buffer = torch.empty((k, chunk, n_components), dtype=dtype, device=device)
        for start in range(0, n, chunk):
            xc = X[start : start + chunk]
            m = xc.shape[0]
            corr = xc @ dictionary.T
            norm_sq = (xc * xc).sum(dim=1)
            resid_sq = norm_sq.clone()
            directions = directions_buffer[:, :m]
            # Identity rows for the steps a sample never reaches keep L invertible.
            chol = torch.eye(k, dtype=dtype, device=device).repeat(m, 1, 1)
            proj = torch.zeros((m, k), dtype=dtype, device=device)
            sel = torch.zeros((m, k), dtype=torch.long, device=device)
            active = norm_sq > (0 if tol is None else tol)
            floor = eps * norm_sq.sqrt()
            for t in range(k):
                val, idx = argmax(corr)
                ok = active & ((val > floor) if positive else (val.abs() > floor))
                w = source.gather(idx, out=directions[t])
                diag_sq = w.gather(1, idx[:, None]).squeeze(1)
                if t:
                    # Cholesky row: the new atom's correlations with the earlier directions.
                    earlier = directions[:t].transpose(0, 1)  # (m, t, K)
                    row = earlier.gather(2, idx[:, None, None].expand(m, t, 1)).squeeze(2)
                    row.mul_(ok[:, None])
                    diag_sq = diag_sq - (row * row).sum(dim=1)
                    w.unsqueeze(1).baddbmm_(row.unsqueeze(1), earlier, alpha=-1.0)
                    chol[:, t, :t] = row
                # A pivot near zero means the atom lies in the span already selected.
                ok &= diag_sq > 1e3 * eps
                diag = torch.where(ok, diag_sq, torch.ones_like(diag_sq)).sqrt_()
                w.div_(diag[:, None])
                step = torch.where(ok, val / diag, torch.zeros_like(val))
                corr.addcmul_(w, step[:, None], value=-1.0)
                chol[:, t, t] = diag
                proj[:, t] = step
                sel[:, t] = idx
                active = ok
                if tol is not None:
                    resid_sq -= step * step
                    active = active & (resid_sq > tol)
                if can_sync and not bool(active.any()):
                    break
            # x_hat = sum_t proj_t q_t and Q = L^{-1} D_S, so the coefficients are L^{-T} proj.
            coef = torch.linalg.solve_triangular(
                chol.transpose(1, 2), proj.unsqueeze(-1), upper=True
            ).squeeze(-1)
            indices[start : start + m] = sel
            values[start : start + m] = coef
        return indices, values


def _scatter_codes(indices, values, n_components):
    codes = torch.zeros((indices.shape[0], n_components), dtype=values.dtype, device=values.device)
    return codes.scatter_add_(1, indices, values)


def _sparse_steps(indices, values, n_components) -> sparse.csr_matrix:
    """The CSR codes (n, n_components) of a pursuit's steps, numpy arrays (n, k): each step's
    value at its atom, an atom selected at several steps holding their sum, and no entry for
    a step of value 0 (not taken) or for steps that cancel out."""
    keep = values != 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    codes = sparse.csr_matrix(
        (values[keep], indices[keep], indptr), shape=(indices.shape[0], n_components)
    )
    codes.sum_duplicates()
    codes.eliminate_zeros()
    return codes


def _prepare(X, dictionary, n_nonzero_coefs, tol):
    X = check_array(X, dtype=[np.float64, np.float32], input_name="X")
    dictionary = check_array(dictionary, dtype=X.dtype, input_name="dictionary")
    if dictionary.shape[1] != X.shape[1]:
        raise ValueError(
            f"dictionary has {dictionary.shape[1]} features per atom but X has {X.shape[1]} "
            "features; the dictionary must have shape (n_components, n_features)."
        )
    if n_nonzero_coefs is None:
        n_nonzero_coefs = max(1, int(0.1 * X.shape[1])) if tol is None else dictionary.shape[0]
    norms = np.linalg.norm(dictionary, axis=1)
    # Zero atoms can never reduce the residual; normalise the rest so that the greedy choice is
    # by cosine, as classic matching pursuit prescribes for non-normalised dictionaries.
    safe = np.where(norms > 0, norms, 1.0).astype(X.dtype)
    unit = torch.from_numpy(dictionary / safe[:, None])
    return torch.from_numpy(X), unit, safe, n_nonzero_coefs


_FUNCTION_PARAMS = {
    # Sparse input passes here so that check_array can say that dense data is required.
    "X": ARRAY_OR_SPARSE,
    "dictionary": ARRAY_OR_SPARSE,
    "n_nonzero_coefs": [NotBoolInterval(numbers.Integral, 1, None, closed="left"), None],
    "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
    "positive": ["boolean"],
    "cache_size": [Interval(numbers.Real, 0, None, closed="neither")],
}


@validate_params(_FUNCTION_PARAMS, prefer_skip_nested_validation=True)
def matching_pursuit(
    X, dictionary, *, n_nonzero_coefs=None, tol=None, positive=True, cache_size=2048
):
    """Sparse codes of ``X`` on ``dictionary`` by matching pursuit (Mallat & Zhang, 1993).

    Each step picks the atom most correlated with the current residual, adds that correlation
    to its code and removes its contribution from the residual. The residual norm never grows,
    so more steps never hurt the reconstruction. An atom may be picked more than once, so a
    code has at most ``n_nonzero_coefs`` non-zeros. Runs in the Gram formulation (one GEMM, then
    O(n_components) work per step and sample), with Gram rows computed only for the atoms
    selected when the whole Gram matrix would cost more, or one correlation GEMM per step when
    few atoms are selected twice; all give the same codes.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals to encode (already centred, if the dictionary expects it).
    dictionary : array-like of shape (n_components, n_features)
        Atoms as rows. Rows need not have unit norm: the choice is by cosine and the codes are
        scaled so that ``codes @ dictionary`` is the reconstruction. Zero rows are never used.
    n_nonzero_coefs : int, default=None
        Number of pursuit steps. If None and ``tol`` is None, 10% of ``n_features`` (as
        :func:`sklearn.linear_model.orthogonal_mp`); if None and ``tol`` is set, up to
        ``n_components`` steps.
    tol : float, default=None
        Stop a sample once its squared residual norm is at most ``tol``.
    positive : bool, default=True
        Select by the largest positive correlation and produce non-negative codes (the MP-SAE
        papers' default). If False, select by absolute correlation (signed codes).
    cache_size : float, default=2048
        Memory budget in MiB (2**20 bytes) for the arrays n_components wide: the Gram matrix
        ``D D^T``, or the rows of it computed for the atoms selected, and blocks of
        correlations. The whole Gram matrix is built only when it fits and costs less than
        its rows; otherwise the rows, or one correlation GEMM per step, give the same codes. A
        budget too small for any of them raises a ValueError naming it.

    Returns
    -------
    codes : ndarray of shape (n_samples, n_components)
        Codes such that ``codes @ dictionary`` approximates ``X``; same dtype as ``X``.

    See Also
    --------
    orthogonal_matching_pursuit : Re-fits all coefficients on the selected atoms at each step.
    sklearn.linear_model.orthogonal_mp : scikit-learn's OMP, one sample at a time.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import matching_pursuit
    >>> D = np.eye(3)
    >>> matching_pursuit(np.array([[3.0, 0.0, -1.0]]), D, n_nonzero_coefs=2, positive=False)
    array([[ 3.,  0., -1.]])
    """
    Xt, unit, norms, k = _prepare(X, dictionary, n_nonzero_coefs, tol)
    max_bytes = int(cache_size * 2**20)
    indices, values, *_ = _select_mp(Xt, unit, k, positive=positive, tol=tol, max_bytes=max_bytes)
    codes = _scatter_codes(indices, values, unit.shape[0]).numpy()
    return codes / norms


@validate_params(_FUNCTION_PARAMS, prefer_skip_nested_validation=True)
def orthogonal_matching_pursuit(
    X, dictionary, *, n_nonzero_coefs=None, tol=None, positive=False, cache_size=2048
):
    """Sparse codes of ``X`` on ``dictionary`` by orthogonal matching pursuit, batched in torch.

    Like :func:`matching_pursuit`, each step picks the atom most correlated with the residual;
    then all coefficients on the selected atoms are re-fitted by least squares, so the residual
    is orthogonal to every selected atom and no atom is picked twice. Batched over samples with
    the Gram matrix and progressive Cholesky updates; the codes agree with
    :func:`sklearn.linear_model.orthogonal_mp_gram` up to float rounding.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals to encode.
    dictionary : array-like of shape (n_components, n_features)
        Atoms as rows; any norms (zero rows are never used).
    n_nonzero_coefs : int, default=None
        Maximum number of atoms per sample. If None and ``tol`` is None, 10% of ``n_features``.
    tol : float, default=None
        Stop a sample once its squared residual norm is at most ``tol``.
    positive : bool, default=False
        Select by largest positive correlation instead of largest absolute correlation. The
        least-squares coefficients may still be negative.
    cache_size : float, default=2048
        Memory budget in MiB (2**20 bytes) for the arrays n_components wide: the Gram matrix
        ``D D^T``, or the rows of it computed for the atoms selected, and blocks of
        correlations. The whole Gram matrix is built only when it fits and costs less than
        its rows; otherwise the rows, or one correlation GEMM per step, give the same codes. A
        budget too small for any of them raises a ValueError naming it.

    Returns
    -------
    codes : ndarray of shape (n_samples, n_components)

    See Also
    --------
    matching_pursuit : The greedy encoder without re-fitting.
    sklearn.linear_model.orthogonal_mp_gram : scikit-learn's Gram-based OMP.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import orthogonal_matching_pursuit
    >>> D = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> orthogonal_matching_pursuit(np.array([[1.6, 0.8]]), D, n_nonzero_coefs=2).round(6)
    array([[1., 1.]])
    """
    Xt, unit, norms, k = _prepare(X, dictionary, n_nonzero_coefs, tol)
    k = min(k, unit.shape[0])
    max_bytes = int(cache_size * 2**20)
    indices, values = _select_omp(Xt, unit, k, positive=positive, tol=tol, max_bytes=max_bytes)
    codes = _scatter_codes(indices, values, unit.shape[0]).numpy()
    return codes / norms
