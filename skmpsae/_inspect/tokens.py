"""Which tokens an atom fires on: counts per (atom, token) gathered in the statistics pass,
and each atom's most frequent tokens with their share of its firings. An atom that fires
mostly on one token (a [CLS], a GPT's first position) reads as a topic on its top contexts
when it is not one: the report flags it."""

import numpy as np
from scipy import sparse

# An atom with more than this share of its firings on one token is flagged.
FLAG_SHARE = 0.5


class _TokenCounts:
    """Firings per (atom, token id), from the token id of each row."""

    def __init__(self, n_components, row_tokens):
        self.row_tokens = np.asarray(row_tokens, dtype=np.int64)
        self.shape = (n_components, int(self.row_tokens.max(initial=0)) + 1)
        self.counts = sparse.csr_matrix(self.shape, dtype=np.int64)

    def add(self, atoms, rows):
        """One chunk's firings: each (row, atom) once. Rows without a token (id -1: image
        patches, pooled rows of a vision-language capture) are not counted."""
        tokens = self.row_tokens[rows]
        on_token = tokens >= 0
        atoms, tokens = atoms[on_token], tokens[on_token]
        ones = np.ones(atoms.shape[0], dtype=np.int64)
        chunk = sparse.csr_matrix((ones, (atoms, tokens)), shape=self.shape)
        self.counts = self.counts + chunk

    def top(self, n):
        """``(ids, counts)``, each (n_components, n): every atom's ``n`` most frequent tokens,
        most frequent first (ties: the smaller id), id -1 and count 0 where it has fewer."""
        counts = self.counts.tocsr()
        counts.sum_duplicates()
        K = self.shape[0]
        ids, top = np.full((K, n), -1, dtype=np.int64), np.zeros((K, n), dtype=np.int64)
        for i in range(K):
            lo, hi = counts.indptr[i], counts.indptr[i + 1]
            tokens, c = counts.indices[lo:hi], counts.data[lo:hi]
            order = np.lexsort((tokens, -c))[:n]
            ids[i, : order.size], top[i, : order.size] = tokens[order], c[order]
        return ids, top
