"""Per-atom summaries that the statistics pass merges chunk by chunk in bounded memory: the
exact largest values per atom (:class:`_TopN`), a histogram of magnitudes whose range
doubles as larger values arrive (:class:`_DoublingHistogram`) and a uniform sample of each
atom's firings (:class:`_FiringSample`)."""

import numpy as np


class _TopN:
    """The ``n_top`` largest values per atom and their rows, exact, merged chunk by chunk."""

    def __init__(self, n_components, n_top, payload=False):
        self.values = np.full((n_components, n_top), -np.inf)
        self.rows = np.full((n_components, n_top), -1, dtype=np.int64)
        # A number carried along with each kept entry (the activation, for _FiringSample).
        self.payload = np.zeros((n_components, n_top)) if payload else None

    def update(self, rows, atoms, values, payload=None):
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
        if self.payload is not None:
            carried = np.concatenate([self.payload[touched].ravel(), payload[enter]])[order]
            self.payload[all_atoms[keep], rank[keep]] = carried[keep]


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
        return _histogram_quantiles(self.counts, self.hi, q)


def _histogram_quantiles(counts, hi, q):
    """Quantiles at levels ``q`` of histograms ``counts`` (n_atoms, n_bins) on ``[0, hi)``,
    linear within a bin (0 for an empty histogram): within one bin of the exact ones."""
    B = counts.shape[1]
    total = counts.sum(axis=1)
    cum = np.cumsum(counts, axis=1)
    out = np.zeros((counts.shape[0], len(q)))
    width = hi / B
    for j, level in enumerate(q):
        target = level * total
        b = np.minimum((cum < target[:, None]).sum(axis=1), B - 1)
        before = np.where(b > 0, cum[np.arange(len(b)), b - 1], 0)
        inside = counts[np.arange(len(b)), b]
        frac = np.where(inside > 0, (target - before) / np.maximum(inside, 1), 0.0)
        out[:, j] = np.where(total > 0, (b + np.clip(frac, 0, 1)) * width, 0.0)
    return out


def _priorities(rows, atoms, seed):
    """A number in [0, 1) per (row, atom), hashed with ``seed`` (splitmix64's finaliser), so
    that the same firing gets the same priority whatever the chunking."""
    with np.errstate(over="ignore"):
        z = np.asarray(rows).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z ^= (np.asarray(atoms).astype(np.uint64) + np.uint64(seed)) * np.uint64(0xD1B54A32D192ED03)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class _FiringSample:
    """A uniform sample without replacement of ``n`` firings per atom (all of them while the
    atom has fired at most ``n`` times), with their values.

    Priority sampling: each firing gets a priority hashed from (row, atom, seed) and each atom
    keeps its ``n`` firings of highest priority, so the sample is uniform, reproducible from
    the seed, independent of how the rows are chunked, and O(n_components x n) in memory. A
    uniform sample restricted to a band of values is a uniform sample of the band, which is
    what the feature pages draw their quantile bands from (:mod:`.bands`)."""

    def __init__(self, n_components, n, seed):
        self.kept = _TopN(n_components, n, payload=True)
        self.seed = int(seed)

    def update(self, rows, atoms, values):
        keys = _priorities(rows, atoms, self.seed)
        self.kept.update(rows, atoms, keys, np.asarray(values, dtype=np.float64))

    def sample(self):
        """``(rows, values)``, each (n_components, n), by row within an atom (-1, 0 pad)."""
        rows = self.kept.rows
        order = np.argsort(np.where(rows >= 0, rows, np.iinfo(np.int64).max), axis=1)
        rows = np.take_along_axis(rows, order, 1)
        values = np.take_along_axis(self.kept.payload, order, 1)
        return rows, np.where(rows >= 0, values, 0.0)
