"""Exact matching-pursuit atom selection for any dictionary size, within a memory budget.

Three paths give the same atoms and values (those of the unrolled loop, up to float rounding):

* ``"gram"``: one GEMM ``X D^T`` for the first correlations, then per step an argmax and an
  update with one row of the whole Gram matrix ``G = D D^T`` (Rubinstein, Zibulevsky & Elad
  2008, "Batch-OMP"). ``G`` costs ``2 K^2 d`` flops and ``K^2`` entries of memory: free when a
  fitted model caches it, prohibitive at large K (412 GFLOP and 1 GiB at K=16,384, d=768).
* ``"rows"``: the same steps, with a Gram row computed (``D[j] @ D^T``, ``2 K d`` flops) only
  when atom ``j`` is first selected in the call and reused afterwards. Costs ``2 U K d`` with
  ``U`` the number of distinct atoms selected, ``U <= min(n k, K)``.
* ``"gemm"``: one correlation GEMM ``r D^T`` per step on the residual ``r`` (as SAE libraries
  write the loop), ``2 n k K d`` flops and no Gram entries at all.

``_plan_mp`` picks the cheapest path that fits the budget with a cost model whose constants were
measured on a 2-core CPU (``benchmarks/bench_selection.py --calibrate``); ties in the model
matter little, as the paths differ in cost only where the model is far from a tie.
"""

import math
from typing import NamedTuple

import torch

from .gram import (
    _DEFAULT_MAX_BYTES,
    _DEVICE_SYNC_STEPS,
    _FIRST_GEMM_BYTES,
    _BlockArgmax,
    _chunk_rows,
    _FullGram,
    _gram,
    _gram_block_rows,
    _LazyGramRows,
)

# Cost model (seconds), measured with one thread by ``benchmarks/bench_selection.py
# --calibrate`` (float32, 768 features, 16,384 atoms; 2-core AMD EPYC): GEMMs of a batch
# (~90 GFLOP/s) and of one chunk's rows (~75 GFLOP/s), an argmax with the fused Gram-row
# update per (row, atom) entry and step (0.7 ns), the per-step GEMM path's argmax, residual
# update and chunk overheads beyond its GEMMs (~1.5 ns, measured 5.5 ns in all less the
# difference in GEMM speed), and the lazy rows' bookkeeping per chunk and step.
_SECONDS_PER_FLOP = 1 / 90e9
_SECONDS_PER_ROW_FLOP = 1 / 75e9
_SECONDS_PER_STEP_ENTRY = 0.8e-9
_SECONDS_PER_ARGMAX_ENTRY = 1.5e-9
_SECONDS_PER_ROWS_CALL = 1.5e-4


# The exact paths, in the order the module docstring describes them.
PATHS = ("gram", "rows", "gemm")


class _Plan(NamedTuple):
    """The selection path :func:`_plan_mp` chose, and its sizes."""

    method: str  # one of PATHS
    chunk: int  # rows per chunk of correlations
    block: int  # rows whose first correlations one GEMM computes (a multiple of chunk)
    capacity: int  # Gram rows the "rows" path may keep
    costs: dict  # modelled seconds of each feasible path


class Selection(NamedTuple):
    """What :func:`_select_mp` returns: a sparse code, step by step, and how it was found."""

    indices: torch.Tensor  # (n, k) long: the atom of each step
    values: torch.Tensor  # (n, k): the step's value (0 for a step not taken)
    plan: _Plan | None  # the path taken (None when there was nothing to select)
    rows_computed: int  # Gram rows computed ("rows" path; 0 on the others)


def _expected_distinct(n_selections, n_components):
    """Distinct atoms among ``n_selections`` uniform draws of ``n_components``.

    An upper estimate of the distinct atoms a batch selects, as real data reuses its frequent
    atoms more than uniform draws do.

    Parameters
    ----------
    n_selections : int
        Draws (rows times steps).
    n_components : int
        Atoms drawn from.

    Returns
    -------
    float
        The expected number of distinct atoms drawn.
    """
    if n_components == 1:
        return 1.0
    return n_components * -math.expm1(n_selections * math.log1p(-1.0 / n_components))


def _plan_mp(
    n,
    n_components,
    n_features,
    k,
    element_size,
    device,
    max_bytes,
    gram_given=False,
    method="auto",
    distinct=None,
):
    """Choose the selection path and its sizes with the cost model.

    Parameters
    ----------
    n, n_components, n_features, k : int
        Rows to encode, atoms, features and pursuit steps.
    element_size : int
        Bytes per float of the data.
    device : torch.device
        Where the selection runs (the CPU's chunks are smaller, its Gram matrix blocked).
    max_bytes : int
        Memory budget for every n_components-wide array (the estimators' ``cache_size``).
    gram_given : bool, default=False
        Whether the caller holds the whole Gram matrix (the "gram" path then costs no GEMM
        beyond the first).
    method : {"auto", "gram", "rows", "gemm"}, default="auto"
        "auto" takes the path the model prices cheapest; a path's name forces it.
    distinct : float, default=None
        The number of distinct atoms the call will select, if known (e.g. measured on the
        previous training batch); None: that of uniform draws, an upper estimate.

    Returns
    -------
    _Plan
        The path, the rows per chunk, the Gram rows the "rows" path may keep, and the modelled
        seconds of every path that fits the budget.

    Raises
    ------
    ValueError
        If the budget cannot hold two Gram rows, or if the forced ``method`` does not fit it.
    """
    K, row_bytes = n_components, n_components * element_size
    if max_bytes < 2 * row_bytes:
        raise ValueError(
            f"The memory budget of {max_bytes / 2**20:.3g} MiB (cache_size) cannot hold the "
            f"two rows of {K} entries that matching pursuit needs at least "
            f"({2 * row_bytes / 2**20:.3g} MiB at n_components={K}, {8 * element_size}-bit "
            "floats); raise cache_size."
        )
    chunk = min(n, _chunk_rows(K, element_size, device, max_bytes // 4))
    # The first correlations of several chunks in one GEMM: a chunk's GEMM alone reads the
    # whole dictionary for a few rows, bound by memory at large K.
    block_rows = min(n, min(_FIRST_GEMM_BYTES, max_bytes // 8) // row_bytes)
    block = chunk * max(1, block_rows // chunk)
    working = (block + chunk) * row_bytes  # correlations and the gathered rows of one chunk
    first = 2.0 * n * n_features * K * _SECONDS_PER_FLOP
    steps = float(n) * K * k * _SECONDS_PER_STEP_ENTRY
    costs = {}
    if gram_given:
        costs["gram"] = first + steps
    elif K * row_bytes + working <= max_bytes:
        # The CPU's blocked product skips the blocks below the diagonal (see _gram).
        gram_block = _gram_block_rows(K)
        blocked = device.type == "cpu" and K > 2 * gram_block
        entries = (K * K + K * gram_block) / 2 if blocked else K * K
        costs["gram"] = first + steps + 2.0 * entries * n_features * _SECONDS_PER_FLOP
    capacity = min(K, max(0, (max_bytes - working) // row_bytes - chunk))
    if distinct is None:
        distinct = _expected_distinct(n * k, K)
    distinct = max(1.0, min(float(distinct), n * k, K))
    kept = min(distinct, capacity)
    # Atoms beyond the cache have their row computed at each selection.
    recomputed = (n * k) * (1 - kept / distinct) if distinct > kept else 0.0
    n_calls = -(-n // chunk) * k
    costs["rows"] = (
        first
        + steps
        + 2.0 * (kept + recomputed) * K * n_features * _SECONDS_PER_ROW_FLOP
        + n_calls * _SECONDS_PER_ROWS_CALL
    )
    # The per-step GEMMs run on chunks of rows, at the speed of the rows' GEMMs.
    costs["gemm"] = (
        2.0 * k * n * n_features * K * _SECONDS_PER_ROW_FLOP
        + float(n) * K * k * _SECONDS_PER_ARGMAX_ENTRY
    )
    if method == "auto":
        method = min(costs, key=lambda p: costs[p])
    elif method not in costs:
        raise ValueError(
            f"The memory budget of {max_bytes / 2**20:.3g} MiB (cache_size) cannot hold the "
            f"{K} x {K} Gram matrix ({K * row_bytes / 2**20:.3g} MiB) that "
            f"selection_method={method!r} needs; raise cache_size or let the path be chosen "
            "automatically."
        )
    return _Plan(method, chunk, block, capacity, costs)


def _select_mp(
    X,
    dictionary,
    n_nonzero_coefs,
    positive=True,
    tol=None,
    gram=None,
    *,
    max_bytes=_DEFAULT_MAX_BYTES,
    method="auto",
    distinct=None,
    compute_dtype=None,
    correlations=None,
    workspace=None,
) -> Selection:
    """Matching pursuit over rows of ``X`` (already centred) on a unit-norm dictionary.

    Each step picks the best atom per row (:class:`_BlockArgmax`) and removes its contribution
    from the row's correlations (a Gram row, or a new correlation GEMM on the residual; see the
    module docstring for the three paths). A sample whose step is not taken (see ``positive``
    and ``tol``) keeps its correlations unchanged, so it stays stopped. The host synchronises
    (to quit once every sample has stopped) after each step on the CPU, and only every
    ``_DEVICE_SYNC_STEPS`` steps on an accelerator. Runs without autograd.

    Parameters
    ----------
    X : torch.Tensor of shape (n, n_features)
        Rows to encode, already centred.
    dictionary : torch.Tensor of shape (n_components, n_features)
        Unit-norm atoms, same dtype and device as ``X``.
    n_nonzero_coefs : int
        Pursuit steps.
    positive : bool, default=True
        Select by the largest positive correlation; a sample whose best correlation is not
        positive has converged (its step value is clamped to 0). False: by absolute value.
    tol : float, default=None
        Stop a sample once its squared residual norm, tracked as ``||x||^2 - sum(values^2)``,
        is at most ``tol``.
    gram : torch.Tensor of shape (n_components, n_components), default=None
        The cached ``D D^T``, if the caller holds it.
    max_bytes : int, default=_DEFAULT_MAX_BYTES
        Bound on every n_components-wide array built here (Gram matrix or rows, correlation
        blocks).
    method : {"auto", "gram", "rows", "gemm"}, default="auto"
        The path; "auto": the cost model's choice (:func:`_plan_mp`).
    distinct : float, default=None
        The planner's hint: distinct atoms the call will select (see :func:`_plan_mp`).
    compute_dtype : torch.dtype, default=None
        Runs the GEMMs on inputs of that dtype (e.g. ``torch.bfloat16``), the results and
        every later step staying in ``X``'s dtype: faster on tensor cores, and the values are
        then approximate (callers recompute them, see :func:`_mp_coefficients`).
    correlations : torch.Tensor of shape (n, n_components), default=None
        ``X @ dictionary.T``, computed by the caller: the selection starts from it instead of
        its first GEMM, and overwrites it.
    workspace : _Workspace, default=None
        Where the Gram matrix, the Gram rows and the correlation blocks are built, reused
        from call to call (a training loop's batches); None: allocated for this call.

    Returns
    -------
    Selection
        ``indices`` and ``values``, each (n, n_nonzero_coefs): a sparse code (a step not
        taken has value 0, and the steps not taken form a suffix); the ``plan`` taken (None
        when ``X`` has no rows or ``n_nonzero_coefs`` is 0) and the Gram ``rows_computed``.
    """
    with torch.no_grad():
        n, n_components = X.shape[0], dictionary.shape[0]
        k, device, dtype = n_nonzero_coefs, X.device, X.dtype
        # Step-major outputs so that every step writes one contiguous slice.
        indices = torch.zeros((k, n), dtype=torch.long, device=device)
        values = torch.zeros((k, n), dtype=dtype, device=device)
        if n == 0 or k == 0:
            return Selection(indices.T, values.T, None, 0)
        plan = _plan_mp(
            n,
            n_components,
            X.shape[1],
            k,
            X.element_size(),
            device,
            max_bytes,
            gram_given=gram is not None,
            method=method,
            distinct=distinct,
        )
        chunk, block = plan.chunk, plan.block
        low = None if compute_dtype is None else dictionary.to(compute_dtype)

        def buffer(name, shape):
            if workspace is None:
                return None
            return workspace.get(name, shape, dtype, device)

        def correlate(rows, out):
            if low is None:
                return torch.matmul(rows, dictionary.T, out=out)
            return out.copy_(rows.to(compute_dtype) @ low.T)

        if plan.method == "gram":
            if gram is None and low is not None:
                gram = _gram(low).to(dtype)
            out = None if gram is not None else buffer("gram", (n_components,) * 2)
            source = _FullGram(dictionary, chunk, gram, out)
        elif plan.method == "rows":
            rows = buffer("gram_rows", (plan.capacity + chunk, n_components))
            source = _LazyGramRows(dictionary, chunk, plan.capacity, compute_dtype, rows)
        else:
            source, gathered = None, torch.empty((chunk, X.shape[1]), dtype=dtype, device=device)
        argmax = _BlockArgmax(n_components, signed=not positive, device=device)
        if correlations is None:
            corr_buffer = buffer("correlations", (block, n_components))
            if corr_buffer is None:
                corr_buffer = torch.empty((block, n_components), dtype=dtype, device=device)
        stops = positive or tol is not None
        sync_every = 1 if device.type == "cpu" else _DEVICE_SYNC_STEPS
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            x_chunk = X[start:stop]
            if correlations is not None:
                corr = correlations[start:stop]
            else:
                if start % block == 0:
                    block_start, block_stop = start, min(start + block, n)
                    correlate(X[block_start:block_stop], corr_buffer[: block_stop - block_start])
                corr = corr_buffer[start - block_start : stop - block_start]
            if source is None:
                residual = x_chunk.clone()
            if tol is not None:
                resid_sq = (x_chunk * x_chunk).sum(dim=1)
            for step in range(k):
                val, idx = argmax(corr)
                if positive:
                    val.clamp_min_(0)
                if tol is not None:
                    val.mul_(resid_sq > tol)
                    resid_sq.sub_(val * val)
                indices[step, start:stop] = idx
                values[step, start:stop] = val
                if step + 1 == k:
                    break  # the last update would never be read
                if source is not None:
                    source.update(corr, idx, val)
                else:
                    rows = torch.index_select(dictionary, 0, idx, out=gathered[: stop - start])
                    residual.addcmul_(rows, val[:, None], value=-1.0)
                    correlate(residual, corr)
                if stops and (step + 1) % sync_every == 0 and not bool(val.any()):
                    break
        rows_computed = getattr(source, "n_computed", 0)
        return Selection(indices.T.contiguous(), values.T.contiguous(), plan, rows_computed)


def _gram_source(dictionary, n, k, chunk, max_bytes, gram=None):
    """Gram rows for OMP, which needs them on every path.

    Parameters
    ----------
    dictionary : torch.Tensor of shape (n_components, n_features)
        Unit-norm atoms.
    n, k : int
        Rows to encode and steps (the expected distinct atoms decide between the sources).
    chunk : int
        Rows per chunk of the caller (the rows updated at once).
    max_bytes : int
        Budget for the Gram entries.
    gram : torch.Tensor of shape (n_components, n_components), default=None
        The cached ``D D^T``, if the caller holds it.

    Returns
    -------
    _FullGram or _LazyGramRows
        The whole matrix when given, or when cheaper and within ``max_bytes``; else rows
        computed as atoms are first selected.
    """
    if gram is not None:
        return _FullGram(dictionary, chunk, gram)
    K, d = dictionary.shape
    row_bytes = K * dictionary.element_size()
    capacity = min(K, max(0, max_bytes // row_bytes - chunk))
    # The whole matrix is one efficient GEMM; rows pay off once most atoms are never selected.
    if K * row_bytes + chunk * row_bytes <= max_bytes and _expected_distinct(n * k, K) > K / 2:
        return _FullGram(dictionary, chunk)
    return _LazyGramRows(dictionary, chunk, capacity)
