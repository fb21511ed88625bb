"""Building blocks of the pursuit kernels: chunk sizing, the per-step argmax and the
Gram-row update, shared by matching pursuit and orthogonal matching pursuit."""

import torch

# Bytes of one row chunk's (rows x n_components) correlation block on the CPU. Every step makes
# a few passes over the block, so it should stay near the cache (L2 is 2 MB per core here); a
# sweep in benchmarks/bench_encode.py put the best size at 2-4 MB, with fewer Python-level ops.
_CHUNK_BYTES = 1 << 22
_MIN_CHUNK_ROWS = 16
# On an accelerator the whole batch goes at once, up to this many bytes of correlations.
_DEVICE_CHUNK_BYTES = 1 << 28
# Width of the blocks of the two-level argmax; below this many atoms a plain argmax is as fast.
_ARGMAX_BLOCK = 64
# Without early stopping on the host, an accelerator checks whether every sample has stopped
# only this often, so that a tolerance-driven encode does not run n_components steps blindly.
_DEVICE_SYNC_STEPS = 32


def _chunk_rows(n_components, element_size, device):
    if device.type != "cpu":
        return max(1, _DEVICE_CHUNK_BYTES // max(1, n_components * element_size))
    return max(_MIN_CHUNK_ROWS, _CHUNK_BYTES // max(1, n_components * element_size))


def _gram(dictionary):
    return dictionary @ dictionary.T


class _BlockArgmax:
    """Row-wise best atom of an (m, K) correlation block: a max over blocks of columns, then
    an argmax inside the winning block.

    ``Tensor.max(dim)`` with indices is not vectorised on the CPU and runs ~5x slower than the
    value-only ``amax``; reducing blocks with ``amax`` and searching one block per row keeps a
    step at one vectorised pass. When K is not a multiple of the block width, one extra block
    covers the last columns (overlapping the previous one). Ties resolve to the first index, as
    ``argmax`` does. ``signed`` compares absolute values and returns the signed correlation.
    """

    def __init__(self, n_components, signed, device):
        self.signed = signed
        self.width = _ARGMAX_BLOCK if n_components >= 4 * _ARGMAX_BLOCK else n_components
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
    """``corr -= values[:, None] * gram[indices]``, fused where that is faster.

    On the CPU a one-non-zero-per-row CSR matrix times the Gram matrix reads each Gram row once
    and accumulates it straight into ``corr`` (25% faster than a gather and an axpy, which write
    and re-read the gathered rows); elsewhere the gather goes into a preallocated buffer.
    """

    def __init__(self, gram, max_rows):
        self.gram = gram
        self.sparse = gram.device.type == "cpu"
        if self.sparse:
            self.row_starts = torch.arange(max_rows + 1, device=gram.device)
        else:
            self.buffer = torch.empty(
                (max_rows, gram.shape[1]), dtype=gram.dtype, device=gram.device
            )

    def __call__(self, corr, indices, values):
        m = corr.shape[0]
        if self.sparse:
            selector = torch.sparse_csr_tensor(
                self.row_starts[: m + 1], indices, values, (m, self.gram.shape[0]),
                check_invariants=False,
            )
            corr.addmm_(selector, self.gram, alpha=-1.0)
        else:
            rows = self.buffer[:m]
            torch.index_select(self.gram, 0, indices, out=rows)
            corr.addcmul_(rows, values[:, None], value=-1.0)
