"""Co-selection counts of atom pairs in memory O(n_components x max_partners).

Exact pair counts need memory proportional to the number of distinct pairs, which grows with
the rows until it nears ``n_components**2`` (16,384 atoms: up to 268M pairs). The tree of atoms
only needs, per atom, its strongest partners, so each atom keeps a Misra-Gries summary of its
partners: ``max_partners`` counters, merged chunk by chunk with the mergeable-summaries rule
(add the counters, subtract the ``(max_partners + 1)``-th largest, keep the positive ones;
Agarwal et al., 2012). A count is exact while its atom has had at most ``max_partners``
distinct partners, and otherwise low by at most the total subtracted from that atom
(``error``), which is itself at most the atom's pairs over ``max_partners + 1``: with 8 pair
steps and 256 partners, 7/257 of its firings. Every partner above that share is kept.
"""

import numpy as np


class _PairSummary:
    """Per atom ``o``, up to ``m`` partners ``p`` (keyed ``o * K + p``, sorted) with ``both``
    (rows where o and p fired together) and ``partner_first`` (of those, rows where p came
    first); ``error[o]`` bounds how low o's counts may be."""

    def __init__(self, n_components, max_partners):
        self.K, self.m = n_components, max_partners
        self.keys = np.zeros(0, dtype=np.int64)
        self.both = np.zeros(0, dtype=np.int64)
        self.partner_first = np.zeros(0)
        self.error = np.zeros(n_components, dtype=np.int64)
        self.pending = []
        self.n_pending = 0

    def add(self, first, second):
        """Rows' ordered pairs: ``first[r]`` fired before ``second[r]``."""
        if first.size == 0:
            return
        # Each pair counts for both atoms: o = first sees its partner after it, o = second
        # sees it before (the flag).
        first, second = first.astype(np.int64), second.astype(np.int64)
        self.pending.append((first * self.K + second, second * self.K + first))
        self.n_pending += first.size
        # A merge sorts the summary, so chunks wait until they are a quarter of its size;
        # merging more at once would hold more memory.
        if self.n_pending > max(1 << 18, self.keys.size // 4):
            self._merge()

    def _merge(self):
        if not self.pending:
            return
        after = [a for a, _ in self.pending]
        before = [b for _, b in self.pending]
        n_new = self.n_pending
        self.pending, self.n_pending = [], 0
        keys = np.concatenate([self.keys, *after, *before])
        both = np.concatenate([self.both, np.ones(2 * n_new, dtype=np.int64)])
        flags = np.zeros(keys.size)
        flags[: self.keys.size] = self.partner_first
        flags[self.keys.size + n_new :] = 1.0
        del after, before
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        keys = keys[starts]
        both = np.add.reduceat(both[order], starts)
        flags = np.add.reduceat(flags[order], starts)
        del order, starts
        owner = keys // self.K
        # Only atoms with more than m partners lose counts: the (m+1)-th largest count is
        # subtracted from all of theirs.
        full = np.bincount(owner, minlength=self.K) > self.m
        cut = np.zeros(self.K, dtype=np.int64)
        crowded = np.flatnonzero(full[owner])
        if crowded.size:
            ranked = crowded[np.lexsort((-both[crowded], owner[crowded]))]
            o = owner[ranked]
            rank = np.arange(o.size) - np.searchsorted(o, o)
            at = ranked[rank == self.m]
            cut[owner[at]] = both[at]
        self.error += cut
        kept = both - cut[owner]
        keep = kept > 0
        # Of those still counted, the partner-first share is kept as it was.
        self.partner_first = flags[keep] * (kept[keep] / both[keep])
        self.keys, self.both = keys[keep], kept[keep]

    def matrix(self):
        """Sparse (K, K) counts of rows where ``i`` fired before ``j``, each pair taken from
        the summary (of its two atoms) that kept the larger count, and the error bound per
        atom."""
        from scipy import sparse

        self._merge()
        o, p = np.divmod(self.keys, self.K)
        n, f = self.both, self.partner_first
        pair = np.minimum(o, p) * self.K + np.maximum(o, p)
        order = np.lexsort((o, -n, pair))
        first = np.ones(order.size, dtype=bool)
        first[1:] = pair[order][1:] != pair[order][:-1]
        pick = order[first]
        o, p, n = o[pick], p[pick], n[pick]
        before = np.rint(f[pick]).astype(np.int64)  # rows with p before o
        rows = np.concatenate([p, o])
        cols = np.concatenate([o, p])
        data = np.concatenate([before, n - before])
        shape = (self.K, self.K)
        counts = sparse.csr_matrix((data, (rows, cols)), shape=shape, dtype=np.int64)
        counts.eliminate_zeros()
        return counts, self.error.copy()
