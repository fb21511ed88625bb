"""The differentiable half of matching-pursuit training: coefficients and errors of atoms
selected beforehand, with exact gradients.

Training never unrolls the pursuit under autograd. The atoms are selected without gradients
(``selection.py``), and then the coefficients of the selected atoms are recomputed here as the
solution of a small triangular system per sample, which gives the unrolled loop's values and
gradients (``tests/test_pursuit.py`` checks both against the loop in float64). Training's loss,
:func:`_mp_squared_error`, goes further and computes the error itself in closed form, without
decoding. The custom autograd functions exist because autograd's own backward passes for these
products cost several times more (each says by how much), or would keep the gathered atoms.
"""

import torch

# Bytes of the atoms gathered at once by :func:`_atom_chunks` (rows x k x n_features):
# below glibc's 32 MiB threshold for mapping allocations afresh, so that the buffers are
# recycled; a fresh 100 MiB (n, k, d) tensor per batch spent more time faulting its pages in
# than the products it fed (4,096 atoms, batches of 1,024, one thread).
_ATOM_CHUNK_BYTES = 8 << 20


def _prefer_gram_products(n_samples, n_components, n_nonzero_coefs) -> bool:
    """Whether the GEMM form of :func:`_mp_coefficients` is cheaper than the gathered form.

    Cost model fitted on a 2-core CPU: the GEMM form runs ~3 (K^2 + nK) d flops at ~110
    GFLOP/s, the gathered form ~n k^2 d flops of small batched products at ~3.4 GFLOP/s.
    """
    K = n_components
    return K * K + n_samples * K < 10 * n_samples * n_nonzero_coefs**2


def _mp_coefficients(X, dictionary, indices, active, gram=None) -> torch.Tensor:
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
        proj = (atoms @ X.unsqueeze(-1)).squeeze(-1)
        pairs = _SelfProducts.apply(atoms)
    else:
        proj = (X @ dictionary.T).gather(1, indices)
        pairs = _gathered_pairs(gram, indices)
    return _solve_steps(proj, pairs, active)


def _gathered_pairs(gram, indices) -> torch.Tensor:
    """``P[i, s, t] = G[j_s, j_t]`` for each sample's selected atoms, shape (n, k, k)."""
    return _GatheredPairs.apply(gram, indices)


def _solve_steps(proj, pairs, active) -> torch.Tensor:
    """The coefficients of :func:`_mp_coefficients` from the atoms' correlations with the
    sample (``proj``, (n, k)) and with each other (``pairs``, (n, k, k)). Only the strict lower
    triangle of ``pairs`` is read (and receives gradients)."""
    coefs = torch.linalg.solve_triangular(
        pairs, proj.unsqueeze(-1), upper=False, unitriangular=True
    ).squeeze(-1)
    # Steps a sample never took form a suffix, so zeroing them leaves earlier steps untouched.
    return coefs * active


def _mp_squared_error(
    centred,
    bias,
    dictionary,
    indices,
    active,
    gram=None,
    correlations=None,
    *,
    selection_gram=None,
    values=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the rows of matching pursuit's squared residual ``||x - b - sum_t c_t d_t||^2``
    for atoms selected beforehand, differentiable in ``dictionary`` and ``bias``, and the
    coefficients ``c``.

    ``centred`` is ``X - bias``, computed without autograd. Each step of matching pursuit on
    unit-norm atoms removes ``c_t^2`` from the residual's energy, so

        ||x - b - sum_t c_t d_t||^2 = ||x - b||^2 - sum_t c_t^2:

    the reconstruction is never formed, decoded or differentiated. The coefficients come from
    the selected atoms' correlations with the row and with each other (:func:`_solve_steps`),
    read in one of two ways:

    * ``gram`` (``D D^T`` built with autograd) and ``correlations`` (``centred @ D^T``, the
      ones the selection started from, without autograd) given: both read off those matrices.
      A training step then costs four GEMMs (the first correlations and the Gram matrix; in
      the backward pass, one product with the Gram matrix's gradient and one with the rows):
      the small dictionaries' way (:func:`_prefer_gram_products`).
    * neither given: the atoms' products with each other (k x k per row) and with the row
      are read without autograd, off ``selection_gram`` (the ``D D^T`` the selection used,
      without autograd) and the selection's step ``values`` when given (each step's value is
      the atom's correlation with the row less the earlier steps' shares), else from the
      gathered atoms (:func:`_atom_products`). The dictionary's gradient goes through the
      atoms' products (:class:`_AtomPairs`) and the correlations with the rows (a sparse
      product, :class:`_SelectedCorrelations`): nothing K x K is differentiated, as suits
      large dictionaries.

    The identity holds on the unit sphere, where the dictionary lives: the value, the bias's
    gradient and the dictionary's gradient along the sphere are those of the residual (the
    unrolled loop's, up to rounding); the dictionary's radial gradient differs, and the trainer
    projects it out (``_SAEModule.project_gradients``) before every step.
    """
    if gram is not None and correlations is not None:
        selected = correlations.gather(1, indices)
        pairs = _gathered_pairs(gram, indices)
    else:
        with torch.no_grad():
            if selection_gram is not None and values is not None:
                known = _pairs_of(selection_gram, indices)
                selected = values + (known.tril(-1) @ values.unsqueeze(-1)).squeeze(-1)
            else:
                known, selected = _atom_products(dictionary, indices, centred)
        pairs = _AtomPairs.apply(dictionary, indices, known)
    proj = _SelectedCorrelations.apply(dictionary, bias, selected, centred, indices)
    coefs = _solve_steps(proj, pairs, active)
    error = _SquaredNorm.apply(bias, centred) - (coefs * coefs).sum()
    return error, coefs


class _SelfProducts(torch.autograd.Function):
    """``A @ A^T`` for a (k, d) matrix or a batch of them, with one product in the backward
    pass, ``(g + g^T) @ A``, where autograd would run two and add their results (the backward
    pass of a 16,384-atom training step spent most of its time there)."""

    @staticmethod
    def forward(ctx, atoms):
        ctx.save_for_backward(atoms)
        return atoms @ atoms.mT

    @staticmethod
    def backward(ctx, grad):
        (atoms,) = ctx.saved_tensors
        return (grad + grad.mT) @ atoms


def _atom_chunks(dictionary, indices):
    """``(rows, indices of those rows, their atoms (m, k, d))`` for chunks of the rows, the
    atoms gathered into one reused buffer of ``_ATOM_CHUNK_BYTES``."""
    (n, k), d = indices.shape, dictionary.shape[1]
    rows = max(1, min(n, _ATOM_CHUNK_BYTES // (k * d * dictionary.element_size())))
    buffer = dictionary.new_empty((rows * k, d))
    for start in range(0, n, rows):
        chunk = indices[start : start + rows]
        m = chunk.shape[0]
        atoms = torch.index_select(dictionary, 0, chunk.flatten(), out=buffer[: m * k])
        yield slice(start, start + m), chunk, atoms.view(m, k, d)


def _atom_products(dictionary, indices, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row ``x_i`` and its selected atoms ``A_i = D[j_i]`` (k, d): ``A_i A_i^T``
    (n, k, k) and ``A_i x_i`` (n, k), without autograd and without storing every atom."""
    n, k = indices.shape
    pairs = dictionary.new_empty((n, k, k))
    selected = dictionary.new_empty((n, k, 1))
    with torch.no_grad():
        for where, _, atoms in _atom_chunks(dictionary.detach(), indices):
            torch.bmm(atoms, atoms.mT, out=pairs[where])
            torch.bmm(atoms, rows[where].unsqueeze(-1), out=selected[where])
    return pairs, selected.squeeze(-1)


def _pair_positions(indices, n_components) -> torch.Tensor:
    """Positions in the flattened Gram matrix of each row's pairs of selected atoms."""
    return (indices[:, :, None] * n_components + indices[:, None, :]).flatten()


def _pairs_of(gram, indices) -> torch.Tensor:
    """``P[i, s, t] = G[j_s, j_t]`` for each row's selected atoms, shape (n, k, k)."""
    flat = _pair_positions(indices, gram.shape[0])
    return gram.reshape(-1)[flat].view(*indices.shape, indices.shape[1])


class _AtomPairs(torch.autograd.Function):
    """The products ``A_i A_i^T`` of each row's selected atoms, ``known`` beforehand (from
    :func:`_pairs_of` or :func:`_atom_products`), differentiable in the dictionary.

    The backward pass gathers the atoms again, a chunk of rows at a time, and adds
    ``(g + g^T) A_i`` into the dictionary's gradient row by row: the gathered (n, k, d)
    atoms are never stored whole.
    """

    @staticmethod
    def forward(ctx, dictionary, indices, known):
        ctx.save_for_backward(dictionary, indices)
        return known

    @staticmethod
    def backward(ctx, grad):
        dictionary, indices = ctx.saved_tensors
        symmetric = grad + grad.mT
        grad_dictionary = torch.zeros_like(dictionary)
        products = None
        for where, chunk, atoms in _atom_chunks(dictionary, indices):
            if products is None:
                products = torch.empty_like(atoms)
            out = products[: atoms.shape[0]]
            torch.bmm(symmetric[where], atoms, out=out)
            grad_dictionary.index_add_(0, chunk.flatten(), out.flatten(0, 1))
        return grad_dictionary, None, None


class _GatheredPairs(torch.autograd.Function):
    """Entries of ``gram`` at each sample's pairs of selected atoms, with the backward pass as
    one ``index_add_`` into the flattened matrix: 4x faster on the CPU than autograd's
    accumulating ``index_put_`` for advanced indexing."""

    @staticmethod
    def forward(ctx, gram, indices):
        ctx.save_for_backward(_pair_positions(indices, gram.shape[0]))
        ctx.n_components = gram.shape[0]
        return _pairs_of(gram, indices)

    @staticmethod
    def backward(ctx, grad):
        (flat,) = ctx.saved_tensors
        K = ctx.n_components
        grad_gram = grad.new_zeros(K * K).index_add_(0, flat, grad.reshape(-1))
        return grad_gram.view(K, K), None


class _SelectedCorrelations(torch.autograd.Function):
    """``(X - b) . d_j`` for each sample's selected atoms, computed beforehand without
    autograd (``selected``, (n, k)). The backward pass returns ``W^T (X - b)`` for the dictionary
    and ``-(W^T 1) D`` for the bias, where ``W`` (n, K) holds the incoming gradient at the
    selected atoms: on the CPU as a sparse product (k of K entries per row; 2x faster than the
    dense GEMM at 256 atoms), elsewhere as a dense GEMM."""

    @staticmethod
    def forward(ctx, dictionary, bias, selected, centred, indices):
        ctx.save_for_backward(dictionary, centred, indices)
        return selected.clone()

    @staticmethod
    def backward(ctx, grad):
        dictionary, centred, indices = ctx.saved_tensors
        (n, k), K = indices.shape, dictionary.shape[0]
        grad_dictionary = grad_bias = None
        if ctx.needs_input_grad[0]:
            if centred.device.type == "cpu":
                rows = torch.arange(n, device=centred.device).repeat_interleave(k)
                weights_t = torch.sparse_coo_tensor(
                    torch.stack([indices.flatten(), rows]),
                    grad.flatten(),
                    (K, n),
                    check_invariants=False,
                )
                grad_dictionary = torch.sparse.mm(weights_t, centred)
            else:
                weights = grad.new_zeros((n, K)).scatter_add_(1, indices, grad)
                grad_dictionary = weights.T @ centred
        if ctx.needs_input_grad[1]:
            per_atom = grad.new_zeros(K).index_add_(0, indices.flatten(), grad.flatten())
            grad_bias = -(per_atom @ dictionary)
        return grad_dictionary, grad_bias, None, None, None


class _SquaredNorm(torch.autograd.Function):
    """``sum_i ||x_i - b||^2`` from the rows ``x_i - b`` computed without autograd; its
    gradient in ``b`` is ``-2 sum_i (x_i - b)``."""

    @staticmethod
    def forward(ctx, bias, centred):
        ctx.save_for_backward(centred.sum(dim=0))
        return (centred * centred).sum()

    @staticmethod
    def backward(ctx, grad):
        (row_sum,) = ctx.saved_tensors
        return -2 * grad * row_sum, None
