"""Each chunk's codes and, for matching pursuit, its selections in pursuit order: what
:func:`feature_statistics` counts."""

import numpy as np
import torch

from .._train.tensors import _as_tensor


def _first_selections(indices, values):
    """Matching pursuit's (n, k) selections with repeats removed: each row's atoms in the order
    first selected (-1 for a step not taken or an atom already selected), and their steps."""
    taken = values != 0
    same = indices[:, :, None] == indices[:, None, :]
    earlier = np.tril(np.ones(indices.shape[1], dtype=bool), -1)
    repeat = (same & taken[:, None, :] & earlier[None]).any(axis=2)
    first = taken & ~repeat
    atoms = np.where(first, indices, -1)
    steps = np.broadcast_to(np.arange(indices.shape[1]), indices.shape)
    return atoms, steps


def _by_value(codes, max_atoms):
    """Each row's active atoms by decreasing activation, the first ``max_atoms`` (-1 pads)."""
    n = codes.shape[0]
    counts = np.diff(codes.indptr)
    width = max(1, min(int(counts.max(initial=0)), max_atoms))
    out = np.full((n, width), -1, dtype=np.int64)
    row_of = np.repeat(np.arange(n), counts)
    order = np.lexsort((-codes.data, row_of))
    ranks = np.arange(codes.nnz) - np.repeat(codes.indptr[:-1], counts)
    ranked_atoms = codes.indices[order]
    keep = ranks < width
    out[row_of[keep], ranks[keep]] = ranked_atoms[keep]
    return out


def _iter_codes(estimator, X, chunk_size, selection):
    """Per chunk: (n_rows, CSR codes, (indices, values) of MP's steps or None)."""
    params = estimator._params_as_tensors(X.dtype)
    device = params["components_"].device
    for start in range(0, X.shape[0], chunk_size):
        chunk = _as_tensor(X[start : start + chunk_size], None, device)
        with torch.no_grad():
            if selection:
                indices, values = (t.cpu().numpy() for t in estimator._select(chunk, params))
                yield chunk.shape[0], None, (indices, values)
            else:
                yield chunk.shape[0], estimator._encode_sparse(chunk, params).tocsr(), None
