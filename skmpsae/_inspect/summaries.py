"""Per-atom summaries that the statistics pass merges chunk by chunk in bounded memory: the
exact largest values per atom (:class:`_TopN`) and a histogram of magnitudes whose range
doubles as larger values arrive (:class:`_DoublingHistogram`)."""

import numpy as np


class _TopN:
    """The ``n_top`` largest values per atom and their rows, exact, merged chunk by chunk."""

    def __init__(self, n_components, n_top):
        self.values = np.full((n_components, n_top), -np.inf)
        self.rows = np.full((n_components, n_top), -1, dtype=np.int64)

    def update(self, rows, atoms, values):
        K, n = self.values.shape
        # Only entries above their atom's current n-th value can enter.
        enter = values > self.values[atoms, -1]
        rows, atoms, values = rows[enter], atoms[enter], values[enter]
        if rows.size == 0:
            return
        touched = np.unique(atoms)
        old_atoms = np.repeat(touched, n)
        old_values = self.values[touched].ravel()
        old_rows = self.rows[touched].ravel()
        all_atoms = np.concatenate([old_atoms, atoms])
        all_values = np.concatenate([old_values, values])
        all_rows = np.concatenate([old_rows, rows])
        # By atom, then value descending, then row ascending (ties go to the earlier row).
        order = np.lexsort((all_rows, -all_values, all_atoms))
        all_atoms, all_values, all_rows = all_atoms[order], all_values[order], all_rows[order]
        starts = np.searchsorted(all_atoms, touched)
        rank = np.arange(all_atoms.size) - np.repeat(
            starts, np.diff(np.append(starts, all_atoms.size))
        )
        keep = rank < n
        self.values[all_atoms[keep], rank[keep]] = all_values[keep]
        self.rows[all_atoms[keep], rank[keep]] = all_rows[keep]


class _DoublingHistogram:
    """Per-atom histogram of firing magnitudes on ``[0, hi)``, ``hi`` a power of two that
    doubles (bins merged in pairs) whenever a larger value arrives: counts stay exact, the bin
    width is at most twice the atom's maximum over ``n_bins``."""

    def __init__(self, n_components, n_bins):
        self.counts = np.zeros((n_components, n_bins), dtype=np.int64)
        self.hi = np.zeros(n_components)

    def update(self, atoms, magnitudes):
        K, B = self.counts.shape
        peak = np.zeros(K)
        np.maximum.at(peak, atoms, magnitudes)
        new = (self.hi == 0) & (peak > 0)
        self.hi[new] = 2.0 ** np.ceil(np.log2(peak[new] * (1 + 1e-12)))
        grow = (peak >= self.hi) & (peak > 0) & ~new
        while grow.any():
            merged = self.counts[grow, 0::2] + self.counts[grow, 1::2]
            self.counts[grow] = 0
            self.counts[grow, : B // 2] = merged
            self.hi[grow] *= 2
            grow = (peak >= self.hi) & (peak > 0)
        bins = np.minimum((magnitudes / self.hi[atoms] * B).astype(np.int64), B - 1)
        self.counts += np.bincount(atoms * B + bins, minlength=K * B).reshape(K, B)

    def edges(self):
        B = self.counts.shape[1]
        return self.hi[:, None] * (np.arange(B + 1) / B)

    def quantiles(self, q):
        """Quantiles of each atom's magnitudes, linear within a bin (0 for a dead atom)."""
        B = self.counts.shape[1]
        total = self.counts.sum(axis=1)
        cum = np.cumsum(self.counts, axis=1)
        out = np.zeros((self.counts.shape[0], len(q)))
        width = self.hi / B
        for j, level in enumerate(q):
            target = level * total
            b = np.minimum((cum < target[:, None]).sum(axis=1), B - 1)
            before = np.where(b > 0, cum[np.arange(len(b)), b - 1], 0)
            inside = self.counts[np.arange(len(b)), b]
            frac = np.where(inside > 0, (target - before) / np.maximum(inside, 1), 0.0)
            out[:, j] = np.where(total > 0, (b + np.clip(frac, 0, 1)) * width, 0.0)
        return out
