"""Pursuit kernels: matching pursuit and orthogonal matching pursuit, batched in torch.

Both encoders work in the Gram formulation (Rubinstein, Zibulevsky & Elad 2008, "Batch-OMP"):
one GEMM gives the first correlations ``c = (X - b) D^T``, after which every step only reads a
row of the Gram matrix ``G = D D^T`` per sample, so a step costs O(n_components) per sample and
nothing in ``n_features``. Rows are processed in chunks whose correlation block stays near the
L2 cache: the per-step reductions are memory bound and fall off a cliff once the block spills.

The public functions take and return numpy arrays; the ``_select_*`` / ``_*_gram`` helpers take
torch tensors and are what the estimators call on their device. No helper synchronises with the
host inside the step loop except to stop early on the CPU, where a sync is free.
"""

import numbers

import numpy as np
import torch
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["matching_pursuit", "orthogonal_matching_pursuit"]

# Target size in bytes of one chunk's (rows x n_components) correlation block.
_CHUNK_BYTES = 1 << 20
_MIN_CHUNK_ROWS = 16


def _chunk_rows(n_components, element_size, device):
    if device.type != "cpu":
        # A GPU wants the whole batch at once; its caches are not the bottleneck.
        return 1 << 16
    return max(_MIN_CHUNK_ROWS, _CHUNK_BYTES // max(1, n_components * element_size))


def _gram(dictionary):
    return dictionary @ dictionary.T


def _mp_steps_gram(corr, gram, n_nonzero_coefs, positive, resid_sq=None, tol=None):
    """Run matching pursuit steps on correlations ``corr`` in place.

    Parameters
    ----------
    corr : tensor of shape (n, K)
        Correlations of the current residuals with the (unit-norm) atoms. Overwritten.
    gram : tensor of shape (K, K)
        ``D D^T`` of the unit-norm dictionary.
    resid_sq, tol : tensor of shape (n,), float or None
        Squared residual norms and the squared-norm tolerance under which a sample stops.

    Returns
    -------
    indices : long tensor (n, n_nonzero_coefs)
    values : tensor (n, n_nonzero_coefs), zero for steps a sample did not take.
    """
    n = corr.shape[0]
    indices = torch.zeros((n, n_nonzero_coefs), dtype=torch.long, device=corr.device)
    values = torch.zeros((n, n_nonzero_coefs), dtype=corr.dtype, device=corr.device)
    active = None
    if tol is not None:
        active = resid_sq > tol
    can_sync = corr.device.type == "cpu"
    rows = torch.arange(n, device=corr.device)
    for step in range(n_nonzero_coefs):
        if positive:
            val, idx = corr.max(dim=1)
        else:
            idx = corr.abs().argmax(dim=1)
            val = corr[rows, idx]
        if positive:
            # A non-positive best correlation means no atom can lower the residual any further
            # with a positive coefficient: matching pursuit has converged for that sample.
            still = val > 0
            active = still if active is None else active & still
        if active is not None:
            val = torch.where(active, val, torch.zeros_like(val))
            if can_sync and not bool(active.any()):
                break
        indices[:, step] = idx
        values[:, step] = val
        corr.addcmul_(gram[idx], val[:, None], value=-1.0)
        if tol is not None:
            resid_sq = resid_sq - val * val
            active = active & (resid_sq > tol)
    return indices, values


def _select_mp(X, dictionary, n_nonzero_coefs, positive=True, tol=None, gram=None):
    """Matching pursuit over rows of ``X`` (already centred) on a unit-norm dictionary.

    Returns the selected ``indices`` and ``values`` of shape (n, n_nonzero_coefs); a step that was
    not taken (early stop) has value 0. Works under ``torch.no_grad``.
    """
    with torch.no_grad():
        if gram is None:
            gram = _gram(dictionary)
        n = X.shape[0]
        n_components = dictionary.shape[0]
        step = _chunk_rows(n_components, X.element_size(), X.device)
        out_idx, out_val = [], []
        for start in range(0, n, step):
            xc = X[start : start + step]
            corr = xc @ dictionary.T
            resid_sq = None
            if tol is not None:
                resid_sq = (xc * xc).sum(dim=1)
            idx, val = _mp_steps_gram(corr, gram, n_nonzero_coefs, positive, resid_sq, tol)
            out_idx.append(idx)
            out_val.append(val)
        if not out_idx:
            shape = (0, n_nonzero_coefs)
            return (
                torch.zeros(shape, dtype=torch.long, device=X.device),
                torch.zeros(shape, dtype=X.dtype, device=X.device),
            )
        return torch.cat(out_idx), torch.cat(out_val)


def _mp_coefficients(X, dictionary, indices, active, gram=None):
    """Differentiable matching-pursuit coefficients for atoms selected beforehand.

    With the atoms ``j_1..j_k`` fixed, step t's coefficient is
    ``c_t = d_{j_t} . x - sum_{s<t} c_s (d_{j_t} . d_{j_s})``: a unit lower-triangular system per
    sample. Solving it gives exactly the unrolled loop's coefficients and gradients while storing
    O(n * k * (k + n_features)) instead of k dense (n, K) correlation tensors.

    The inner products come either from gathered atoms (batched products of size k x k x d per
    sample) or, when a differentiable ``gram = D D^T`` is given, from rows of ``X D^T`` and of
    the Gram matrix (a few large GEMMs). The second wins for small dictionaries:
    see :func:`_prefer_gram_products`.

    Returns the coefficients, shape (n, k); steps a sample did not take (``active == 0``) get 0.
    """
    if gram is None:
        atoms = torch.nn.functional.embedding(indices, dictionary)  # (n, k, d)
        proj = torch.einsum("nkd,nd->nk", atoms, X)
        pairs = atoms @ atoms.transpose(1, 2)
    else:
        proj = (X @ dictionary.T).gather(1, indices)
        pairs = gram[indices[:, :, None], indices[:, None, :]]
    eye = torch.eye(indices.shape[1], dtype=X.dtype, device=X.device)
    coefs = torch.linalg.solve_triangular(
        torch.tril(pairs, diagonal=-1) + eye, proj.unsqueeze(-1), upper=False, unitriangular=True
    ).squeeze(-1)
    # Steps a sample never took form a suffix, so zeroing them leaves earlier steps untouched.
    return coefs * active


def _prefer_gram_products(n_samples, n_components, n_nonzero_coefs):
    """Whether the GEMM form of :func:`_mp_coefficients` is cheaper than the gathered form.

    Cost model fitted on a 2-core CPU: the GEMM form runs ~3 (K^2 + nK) d flops at ~110
    GFLOP/s, the gathered form ~n k^2 d flops of small batched products at ~3.4 GFLOP/s.
    """
    K = n_components
    return K * K + n_samples * K < 10 * n_samples * n_nonzero_coefs**2


def _decode_selected(indices, values, dictionary):
    """``sum_t values[:, t] * dictionary[indices[:, t]]`` without a dense (n, K) code matrix."""
    return torch.nn.functional.embedding_bag(
        indices, dictionary, per_sample_weights=values, mode="sum"
    )


def _omp_gram(X, dictionary, n_nonzero_coefs, positive=False, tol=None, gram=None):
    """Batched orthogonal matching pursuit with progressive Cholesky updates.

    At step t the codes on the selected set S solve ``G_SS a = c0_S`` (c0: initial correlations);
    the Cholesky factor of ``G_SS`` grows by one row per step, and the new correlations are
    ``c0 - a G_S``. A sample stops when its residual reaches ``tol`` or when the next atom is
    (numerically) in the span of those selected.

    Returns dense codes of shape (n, K).
    """
    with torch.no_grad():
        if gram is None:
            gram = _gram(dictionary)
        n, n_components = X.shape[0], dictionary.shape[0]
        k = n_nonzero_coefs
        eps = torch.finfo(X.dtype).eps
        codes = torch.zeros((n, n_components), dtype=X.dtype, device=X.device)
        # OMP keeps k rows of G per sample, so its chunks are k times smaller than MP's.
        step = max(1, _chunk_rows(n_components, X.element_size(), X.device) * 8 // max(k, 1))
        can_sync = X.device.type == "cpu"
        for start in range(0, n, step):
            xc = X[start : start + step]
            m = xc.shape[0]
            rows = torch.arange(m, device=X.device)
            c0 = xc @ dictionary.T
            corr = c0.clone()
            norm_sq = (xc * xc).sum(dim=1)
            sel = torch.zeros((m, k), dtype=torch.long, device=X.device)
            g_sel = torch.zeros((m, k, n_components), dtype=X.dtype, device=X.device)
            chol = torch.zeros((m, k, k), dtype=X.dtype, device=X.device)
            coef = torch.zeros((m, k), dtype=X.dtype, device=X.device)
            active = torch.ones(m, dtype=torch.bool, device=X.device)
            if tol is not None:
                active &= norm_sq > tol
            n_taken = torch.zeros(m, dtype=torch.long, device=X.device)
            for t in range(k):
                score = corr if positive else corr.abs()
                val, idx = score.max(dim=1)
                ok = active & (val > (0 if positive else eps * norm_sq.sqrt().clamp_min(eps)))
                g_row = gram[idx]  # (m, K)
                if t == 0:
                    diag = g_row[rows, idx]
                    ok &= diag > eps
                    new_l = torch.zeros((m, 0), dtype=X.dtype, device=X.device)
                else:
                    g_s = g_row.gather(1, sel[:, :t])  # (m, t): G[j, S]
                    new_l = torch.linalg.solve_triangular(
                        chol[:, :t, :t], g_s.unsqueeze(-1), upper=False
                    ).squeeze(-1)
                    diag = g_row[rows, idx] - (new_l * new_l).sum(dim=1)
                    # A pivot near zero means the atom lies in the span already selected.
                    ok &= diag > 1e3 * eps
                active = ok
                if can_sync and not bool(active.any()):
                    break
                sel[:, t] = torch.where(active, idx, sel[:, max(t - 1, 0)])
                g_sel[:, t] = torch.where(active[:, None], g_row, g_sel[:, t])
                diag_root = torch.where(active, diag, torch.ones_like(diag)).clamp_min(eps).sqrt()
                chol[:, t, :t] = torch.where(active[:, None], new_l, chol[:, t, :t])
                chol[:, t, t] = torch.where(active, diag_root, torch.ones_like(diag_root))
                n_taken += active.long()
                # Solve L L^T a = c0_S over all t+1 slots; inactive rows keep their last solution.
                rhs = c0.gather(1, sel[:, : t + 1]).unsqueeze(-1)
                lt = chol[:, : t + 1, : t + 1]
                sol = torch.cholesky_solve(rhs, lt, upper=False).squeeze(-1)
                coef[:, : t + 1] = torch.where(active[:, None], sol, coef[:, : t + 1])
                corr = c0 - torch.einsum("mt,mtk->mk", coef[:, : t + 1], g_sel[:, : t + 1])
                if tol is not None:
                    resid_sq = norm_sq - (coef[:, : t + 1] * rhs.squeeze(-1)).sum(dim=1)
                    active = active & (resid_sq > tol)
            # Slots a sample never took hold zeros after the masked solve above.
            taken = torch.arange(k, device=X.device)[None, :] < n_taken[:, None]
            codes[start : start + m].scatter_add_(1, sel, coef * taken)
        return codes


def _naive_matching_pursuit(X, dictionary, n_nonzero_coefs, positive=True):
    """The unrolled loop as the MP-SAE reference code writes it: a full ``r @ D.T``, a one-hot
    code and ``r -= onehot @ D`` per step. Kept as the reference for tests and benchmarks; it is
    differentiable and stores k dense (n, K) tensors when run under autograd.
    """
    residual = X
    codes = torch.zeros((X.shape[0], dictionary.shape[0]), dtype=X.dtype, device=X.device)
    for _ in range(n_nonzero_coefs):
        corr = residual @ dictionary.T
        if positive:
            idx = corr.argmax(dim=1)
        else:
            idx = corr.abs().argmax(dim=1)
        onehot = torch.nn.functional.one_hot(idx, dictionary.shape[0]).to(X.dtype)
        val = (corr * onehot).sum(dim=1, keepdim=True)
        if positive:
            val = val.clamp_min(0)
        step_code = onehot * val
        codes = codes + step_code
        residual = residual - step_code @ dictionary
    return codes


def _scatter_codes(indices, values, n_components):
    codes = torch.zeros(
        (indices.shape[0], n_components), dtype=values.dtype, device=values.device
    )
    return codes.scatter_add_(1, indices, values)


def _prepare(X, dictionary, n_nonzero_coefs, tol):
    if isinstance(n_nonzero_coefs, bool):
        raise TypeError(f"n_nonzero_coefs must be an int, got the boolean {n_nonzero_coefs!r}.")
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
    "X": ["array-like", "sparse matrix"],
    "dictionary": ["array-like", "sparse matrix"],
    "n_nonzero_coefs": [Interval(numbers.Integral, 1, None, closed="left"), None],
    "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
    "positive": ["boolean"],
}


@validate_params(_FUNCTION_PARAMS, prefer_skip_nested_validation=True)
def matching_pursuit(X, dictionary, *, n_nonzero_coefs=None, tol=None, positive=True):
    """Sparse codes of ``X`` on ``dictionary`` by matching pursuit (Mallat & Zhang, 1993).

    Each step picks the atom most correlated with the current residual, adds that correlation
    to its code and removes its contribution from the residual. The residual norm never grows,
    so more steps never hurt the reconstruction. An atom may be picked more than once, so a
    code has at most ``n_nonzero_coefs`` non-zeros. Runs in the Gram formulation: one GEMM, then
    O(n_components) work per step and sample.

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
    indices, values = _select_mp(Xt, unit, k, positive=positive, tol=tol)
    codes = _scatter_codes(indices, values, unit.shape[0]).numpy()
    return codes / norms


@validate_params(_FUNCTION_PARAMS, prefer_skip_nested_validation=True)
def orthogonal_matching_pursuit(X, dictionary, *, n_nonzero_coefs=None, tol=None, positive=False):
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
    codes = _omp_gram(Xt, unit, k, positive=positive, tol=tol).numpy()
    return codes / norms
