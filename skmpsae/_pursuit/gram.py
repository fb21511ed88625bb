"""Building blocks of the pursuit kernels: the size constants, the per-step argmax, and the
sources of Gram rows (the whole ``D D^T``, or rows computed when an atom is first selected),
shared by matching pursuit and orthogonal matching pursuit.

Every (rows x n_components) array the kernels allocate is sized here, so that the memory budget
(``max_bytes``, the estimators' ``cache_size``) bounds all of them together.
"""

import warnings

import torch

# -- sizes --------------------------------------------------------------------------------------
# Bytes of one row chunk's (rows x n_components) correlation block on the CPU. Every step makes
# a few passes over the block; benchmarks/bench_encode.py's sweep (docs/performance.md, 4,096
# atoms) found 4-8 MB best, 10-20% faster than 1 MB or 32 MB.
_CHUNK_BYTES = 1 << 22
_MIN_CHUNK_ROWS = 16
# Bytes of the first correlations computed by one GEMM on the CPU, several chunks at once:
# at 16,384 atoms a chunk of 64 rows' GEMM reads the whole 48 MiB dictionary for 4 MiB of
# output, and 1,024 rows took 2.5-2.9 s in 64-row GEMMs against 1.65 s in one (one thread).
_FIRST_GEMM_BYTES = 1 << 26
# On an accelerator the whole batch goes at once, up to this many bytes of correlations.
_DEVICE_CHUNK_BYTES = 1 << 28
# OMP's per-chunk state is dominated by the (k, rows, n_components) orthonormalised directions,
# which every step reads.
_OMP_CHUNK_BYTES = 1 << 25
# Default memory budget for everything n_components wide (Gram entries, correlation blocks).
_DEFAULT_MAX_BYTES = 2048 << 20
# Rows per block of the CPU Gram matrix, of which only the upper triangle is multiplied: an
# eighth of the atoms, within these bounds (at 4,096 atoms, 512-row blocks took 0.9 s where
# one GEMM took 1.5-1.8 s, one thread; from 16,384 atoms 2,048 and 512 tied).
_GRAM_BLOCK_ROWS = 2048
_GRAM_MIN_BLOCK_ROWS = 512


def _gram_block_rows(n_components):
    """Rows per block of :func:`_gram` on the CPU; blocks are used above two of them."""
    return max(_GRAM_MIN_BLOCK_ROWS, min(_GRAM_BLOCK_ROWS, n_components // 8))


# Width of the blocks of the two-level argmax.
_ARGMAX_BLOCK = 64
# Atoms up to which one Tensor.max beats the blocked argmax (512 rows, one thread: 98 against
# 131 us at 256 atoms, even at 512).
_PLAIN_MAX_COMPONENTS = 512
# Without early stopping on the host, an accelerator checks whether every sample has stopped
# only this often, so that a tolerance-driven encode does not run n_components steps blindly.
_DEVICE_SYNC_STEPS = 32
# torch's CPU product of a sparse CSR matrix with a dense one indexes the dense operand with
# 32-bit offsets: with 2**31 or more elements it reads out of bounds and kills the interpreter
# (first seen at 46,341 atoms, 46,341**2 > 2**31). Larger Gram matrices take the gather path.
_MAX_CSR_DENSE_NUMEL = 2**31 - 1


def _chunk_rows(n_components, element_size, device, max_bytes=None):
    """Rows per chunk of correlations, within ``max_bytes`` if given."""
    row_bytes = max(1, n_components * element_size)
    if device.type != "cpu":
        rows = max(1, _DEVICE_CHUNK_BYTES // row_bytes)
    else:
        rows = max(_MIN_CHUNK_ROWS, _CHUNK_BYTES // row_bytes)
    if max_bytes is not None:
        rows = min(rows, max(1, max_bytes // row_bytes))
    return rows


class _Workspace:
    """Buffers that a training loop's selections reuse from batch to batch.

    glibc maps every allocation of 32 MiB or more afresh and unmaps it when freed, so a
    tensor that size allocated per batch faults all its pages in again each time: 40 ms per
    batch for the 64 MiB Gram matrix of 4,096 atoms, more than a sixth of its product. The
    buffers live until :meth:`clear` (the trainer's, at the end of each epoch) and are never
    pickled or copied.
    """

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype, device) -> torch.Tensor:
        """The buffer ``name``, allocated anew only if its shape, dtype or device changed;
        its contents are whatever the last user left."""
        buffer = self._buffers.get(name)
        shape = torch.Size(shape)
        if (
            buffer is None
            or buffer.shape != shape
            or buffer.dtype != dtype
            or buffer.device != torch.device(device)
        ):
            self._buffers[name] = None  # free the old one before allocating
            buffer = self._buffers[name] = torch.empty(shape, dtype=dtype, device=device)
        return buffer

    def clear(self) -> None:
        self._buffers = {}

    def __getstate__(self):
        return {"_buffers": {}}


def _gram(dictionary, out=None):
    """``D D^T``, into ``out`` if given. On the CPU, above two blocks of rows
    (:func:`_gram_block_rows`), only the blocks on and above the diagonal are multiplied and
    the rest mirrored: 56% of the flops at 4,096 and 16,384 atoms, 30-40% faster than one GEMM
    (``benchmarks/bench_selection.py``)."""
    n_components = dictionary.shape[0]
    block = _gram_block_rows(n_components)
    if dictionary.device.type != "cpu" or dictionary.requires_grad or n_components <= 2 * block:
        return torch.matmul(dictionary, dictionary.T, out=out)
    gram = out
    if gram is None:
        gram = torch.empty((n_components, n_components), dtype=dictionary.dtype)
    for start in range(0, n_components, block):
        stop = min(start + block, n_components)
        torch.matmul(dictionary[start:stop], dictionary[start:].T, out=gram[start:stop, start:])
        if stop < n_components:
            gram[stop:, start:stop] = gram[start:stop, stop:].T
    return gram


class _BlockArgmax:
    """Row-wise best atom of an (m, K) correlation block: a max over blocks of columns, then
    an argmax inside the winning block.

    ``Tensor.max(dim)`` with indices is not vectorised on the CPU and runs ~5x slower than the
    value-only ``amax``; reducing blocks with ``amax`` and searching one block per row keeps a
    step at one vectorised pass. When K is not a multiple of the block width, one extra block
    covers the last columns (overlapping the previous one). Up to ``_PLAIN_MAX_COMPONENTS``
    atoms, where the blocks' extra operations cost more than they save, one ``max`` does it.
    Ties resolve to the first index, as ``argmax`` does. ``signed`` compares absolute values
    and returns the signed correlation.
    """

    def __init__(self, n_components, signed, device):
        self.signed = signed
        self.plain = n_components <= _PLAIN_MAX_COMPONENTS
        if self.plain:
            return
        self.width = _ARGMAX_BLOCK
        self.n_full = n_components // self.width
        self.has_tail = self.n_full * self.width < n_components
        starts = torch.arange(self.n_full + self.has_tail, device=device) * self.width
        if self.has_tail:
            starts[-1] = n_components - self.width
        self.starts = starts
        self.offsets = torch.arange(self.width, device=device)

    def _block_best(self, corr):
        blocks = [corr[:, : self.n_full * self.width].unflatten(1, (self.n_full, self.width))]
        if self.has_tail:
            blocks.append(corr[:, -self.width :].unsqueeze(1))
        if self.signed:
            best = [torch.maximum(b.amax(2), b.amin(2).neg_()) for b in blocks]
        else:
            best = [b.amax(2) for b in blocks]
        return best[0] if len(best) == 1 else torch.cat(best, dim=1)

    def __call__(self, corr):
        """``(values, indices)`` of the best atom per row of ``corr``."""
        if self.plain:
            if not self.signed:
                return corr.max(1)
            indices = corr.abs().argmax(1, keepdim=True)
            return corr.gather(1, indices).squeeze(1), indices.squeeze(1)
        which = self._block_best(corr).argmax(1)
        columns = self.starts[which][:, None] + self.offsets
        block = corr.gather(1, columns)
        if self.signed:
            offset = block.abs().argmax(1, keepdim=True)
            values = block.gather(1, offset).squeeze(1)
        else:
            values, offset = block.max(1, keepdim=True)
            values = values.squeeze(1)
        return values, columns.gather(1, offset).squeeze(1)


class _GramRowUpdate:
    """``corr -= values[:, None] * rows[indices]``, fused where that is faster and safe.

    On the CPU a one-non-zero-per-row CSR matrix times ``rows`` reads each row once and
    accumulates it straight into ``corr`` (25% faster than a gather and an axpy, which write and
    re-read the gathered rows). Elsewhere, and on the CPU when ``rows`` has 2**31 elements or
    more (see ``_MAX_CSR_DENSE_NUMEL``), the gather goes into a preallocated buffer.
    """

    def __init__(self, rows, max_rows):
        self.rows = rows
        self.sparse = rows.device.type == "cpu" and rows.numel() <= _MAX_CSR_DENSE_NUMEL
        if self.sparse:
            self.row_starts = torch.arange(max_rows + 1, device=rows.device)
            # torch warns once per process that sparse CSR is in beta: spend the warning here.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._selector(1, self.row_starts[:1], torch.zeros(1, dtype=rows.dtype))
        else:
            self.buffer = torch.empty(
                (max_rows, rows.shape[1]), dtype=rows.dtype, device=rows.device
            )

    def _selector(self, m, indices, values):
        return torch.sparse_csr_tensor(
            self.row_starts[: m + 1],
            indices,
            values,
            (m, self.rows.shape[0]),
            check_invariants=False,
        )

    def __call__(self, corr, indices, values):
        m = corr.shape[0]
        if self.sparse:
            corr.addmm_(self._selector(m, indices, values), self.rows, alpha=-1.0)
        else:
            gathered = self.buffer[:m]
            torch.index_select(self.rows, 0, indices, out=gathered)
            corr.addcmul_(gathered, values[:, None], value=-1.0)


class _FullGram:
    """Rows of the whole Gram matrix ``D D^T`` (given, or computed here once, into ``out``
    if given)."""

    def __init__(self, dictionary, max_rows, gram=None, out=None):
        self.gram = _gram(dictionary, out) if gram is None else gram
        self._update = _GramRowUpdate(self.gram, max_rows)

    def update(self, corr, indices, values):
        """``corr -= values[:, None] * G[indices]``."""
        self._update(corr, indices, values)

    def gather(self, indices, out):
        """``G[indices]``, written into ``out``."""
        return torch.index_select(self.gram, 0, indices, out=out)


class _LazyGramRows:
    """Rows of ``D D^T`` computed when an atom is first selected, then reused for the call.

    Up to ``capacity`` rows are kept; the rows of atoms first selected once the cache is full
    are computed for the step that needs them only, in a scratch area of ``max_rows`` rows after
    the cache. Selections are exact either way: a row is ``D[j] @ D^T``, whichever the path.
    ``n_computed`` counts the rows computed (the flops spent are ``2 * n_computed * K * d``).
    """

    def __init__(self, dictionary, max_rows, capacity, compute_dtype=None, out=None):
        n_components = dictionary.shape[0]
        kw = {"dtype": dictionary.dtype, "device": dictionary.device}
        self.dictionary = dictionary
        # Rows computed in a lower precision (e.g. bfloat16 on tensor cores), stored as kw.
        self.low = None if compute_dtype is None else dictionary.to(compute_dtype)
        self.capacity = capacity
        self.scratch = capacity
        # Untouched pages of torch.empty cost no memory on the CPU: the cache grows as it fills.
        # ``out``, if given, holds them instead (a workspace's buffer of that shape).
        self.rows = torch.empty((capacity + max_rows, n_components), **kw) if out is None else out
        self.slot_of = torch.full((n_components,), -1, dtype=torch.long, device=kw["device"])
        self.n_cached = 0
        self.n_computed = 0
        self._update = _GramRowUpdate(self.rows, max_rows)

    def _compute(self, atoms, start):
        out = self.rows[start : start + atoms.shape[0]]
        if self.low is None:
            torch.matmul(self.dictionary[atoms], self.dictionary.T, out=out)
        else:
            out.copy_(self.low[atoms] @ self.low.T)
        self.n_computed += atoms.shape[0]

    def slots(self, indices):
        """Positions in ``self.rows`` of the Gram rows of ``indices``, computing missing ones."""
        slots = self.slot_of[indices]
        missing = slots < 0
        if not bool(missing.any()):
            return slots
        new = torch.unique(indices[missing])  # sorted
        n_keep = min(new.shape[0], self.capacity - self.n_cached)
        if n_keep:
            kept = new[:n_keep]
            self._compute(kept, self.n_cached)
            self.slot_of[kept] = torch.arange(
                self.n_cached, self.n_cached + n_keep, device=kept.device
            )
            self.n_cached += n_keep
            slots = self.slot_of[indices]
        if n_keep < new.shape[0]:
            transient = new[n_keep:]
            self._compute(transient, self.scratch)
            position = torch.searchsorted(transient, indices).clamp_max_(transient.shape[0] - 1)
            slots = torch.where(slots < 0, self.scratch + position, slots)
        return slots

    def update(self, corr, indices, values):
        """``corr -= values[:, None] * G[indices]``."""
        self._update(corr, self.slots(indices), values)

    def gather(self, indices, out):
        """``G[indices]``, written into ``out``."""
        return torch.index_select(self.rows, 0, self.slots(indices), out=out)
