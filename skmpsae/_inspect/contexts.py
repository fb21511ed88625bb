"""Context windows around activating rows, the atom's activation over them, and the atoms'
direct effect on a language model's next-token logits."""

import numpy as np
import torch

from .._train.tensors import _as_tensor


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
    distinct row once, chunk by chunk."""
    rows = np.asarray(rows, dtype=np.int64)
    atoms = np.broadcast_to(np.asarray(atoms, dtype=np.int64)[..., None], rows.shape)
    out = np.zeros(rows.shape)
    valid = rows >= 0
    wanted_rows, wanted_atoms = rows[valid], atoms[valid]
    unique, inverse = np.unique(wanted_rows, return_inverse=True)
    values = np.zeros(wanted_rows.size)
    params = estimator._params_as_tensors(X.dtype)
    device = params["components_"].device
    for start in range(0, unique.size, chunk_size):
        block = unique[start : start + chunk_size]
        chunk = _as_tensor(np.asarray(X[block]), None, device)
        with torch.no_grad():
            codes = estimator._encode_sparse(chunk, params).tocsr()
        mine = (inverse >= start) & (inverse < start + block.size)
        values[mine] = np.asarray(codes[inverse[mine] - start, wanted_atoms[mine]]).ravel()
    out[valid] = values
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
