"""Each chunk's codes and, for matching pursuit, its selections in pursuit order: what
:func:`feature_statistics` counts."""

import numpy as np
import torch

from .._models.matching_pursuit_module import _steps_kept
from .._pursuit.selection import _select_mp
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


def _tree_selections(estimator, chunk, params, indices, values, pair_steps, min_cosine, threshold):
    """Each row's atoms counted for the tree, (n, pair_steps) in order first selected (-1:
    none): a matching pursuit over the model's dictionary for ``pair_steps`` steps, taken
    past the model's own number of steps if need be, up to the first step whose value is at
    most ``threshold`` or whose atom's cosine with the residual is below ``min_cosine``.

    Where an atom absorbed part of its parent (its child's direction plus the parent's),
    the row's parent atom comes at a later step than the model's few; and on a row
    already reconstructed, a fixed-step pursuit still selects atoms for the residual left by
    the overlaps of the atoms, counts that make a child look more frequent than its
    parent. The cosine cut keeps the first and drops the second."""
    if estimator.transform_algorithm != "omp" and values.shape[1] >= pair_steps:
        # The model's pursuit already took these steps: the same selections.
        indices, values = indices[:, :pair_steps], values[:, :pair_steps]
        centred = chunk - params["intercept_"]
    else:
        centred = chunk - params["intercept_"]
        indices, values, *_ = _select_mp(
            centred,
            params["components_"],
            pair_steps,
            estimator.positive_code,
            None,
            params["gram"],
            max_bytes=estimator._max_bytes(),
        )
    values = torch.where(values.abs() > threshold, values, torch.zeros_like(values))
    kept = _steps_kept(centred, values, min_cosine)
    atoms, _ = _first_selections(indices.cpu().numpy(), (values * kept).cpu().numpy())
    return atoms


def _iter_codes(estimator, X, chunk_size, selection, pair_steps=0, min_cosine=0.0, threshold=0.0):
    """Per chunk: (n_rows, CSR codes, (indices, values) of MP's steps or None, the tree's
    selections of MP (:func:`_tree_selections`; None without ``pair_steps``) or None)."""
    params = estimator._params_as_tensors(X.dtype)
    device = params["components_"].device
    for start in range(0, X.shape[0], chunk_size):
        chunk = _as_tensor(X[start : start + chunk_size], None, device)
        with torch.no_grad():
            if selection:
                indices, values = estimator._select(chunk, params)
                tree = None
                if pair_steps:
                    tree = _tree_selections(
                        estimator, chunk, params, indices, values, pair_steps, min_cosine, threshold
                    )
                steps = (indices.cpu().numpy(), values.cpu().numpy())
                yield chunk.shape[0], None, steps, tree
            else:
                codes = estimator._encode_sparse(chunk, params).tocsr()
                yield chunk.shape[0], codes, None, None
