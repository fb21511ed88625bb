"""Examples below the top ones, drawn from bands of each atom's activations, as SAE-Vis and
Neuronpedia show them: the top examples alone show an atom at its strongest, which can be
unlike what it does most of the time.

:func:`draw_in_bands` is the one draw that both kinds of page use. The image pages' bands are
fractions of the peak of the atom's top image (:mod:`.images`, which holds every image's
peak); the text pages' bands are quantiles of the atom's firing magnitudes
(:func:`quantile_bands`), their contexts drawn from the uniform sample of firings that the
statistics pass keeps (:class:`.summaries._FiringSample`).
"""

import numpy as np
from sklearn.utils import Bunch

from .summaries import _histogram_quantiles

# Firings sampled per atom for the text bands, per context shown: with equal-mass bands the
# sample puts _OVERSAMPLE x n_per_band firings in each band on average, so that a band comes
# short only where the atom has too few firings there (or, with 4 bands of 4, with a chance
# near 2e-5 per band: Binomial(64, 1/4) < 4). One pass and O(n_components x n_bands x
# n_per_band) memory, where a reservoir per band would need the band edges before the pass,
# and so a second pass over the rows.
_OVERSAMPLE = 4


def draw_in_bands(values, bands, n, rng, exclude=()):
    """Per band ``(lo, hi]``, up to ``n`` indices of ``values`` inside it and not in
    ``exclude``, drawn without replacement with ``rng`` (a numpy Generator), in increasing
    order."""
    allowed = np.ones(np.shape(values), dtype=bool)
    allowed[np.asarray(exclude, dtype=np.int64)] = False
    drawn = []
    for lo, hi in bands:
        inside = np.flatnonzero(allowed & (values > lo) & (values <= hi))
        pick = rng.choice(inside, size=min(n, inside.size), replace=False)
        drawn.append(np.sort(pick))
    return drawn


def n_random(n_bands, n_per_band):
    """The firings per atom that :func:`quantile_bands` needs sampled."""
    return _OVERSAMPLE * n_bands * n_per_band


def quantile_bands(stats, n_bands, n_per_band, rng):
    """Per atom, ``n_per_band`` firings drawn from each of ``n_bands`` bands of equal mass of
    its firing magnitudes, strongest band first, leaving out its top rows.

    ``stats`` is :func:`.stats.feature_statistics`'s result with ``n_random`` at least
    :func:`n_random`. The band edges are the quantiles read off each atom's histogram (within
    one bin of the exact ones); the lowest band starts at 0 and the highest has no upper edge
    (so that every firing is in a band). Returns a Bunch: ``levels`` (n_bands, 2), the
    quantile levels of each band; ``edges`` (n_components, n_bands, 2), its magnitudes
    (``inf`` above the highest); ``rows`` and ``activations`` (n_components, n_bands,
    n_per_band), the drawn firings, strongest first (row -1 and value 0 pad a band with
    fewer)."""
    K = stats.frequency.size
    levels = np.linspace(0.0, 1.0, n_bands + 1)
    cuts = _histogram_quantiles(stats.histogram, stats.histogram_edges[:, -1], levels)
    cuts[:, 0], cuts[:, -1] = 0.0, np.inf
    edges = np.stack([cuts[:, :-1], cuts[:, 1:]], axis=2)[:, ::-1]
    rows = np.full((K, n_bands, n_per_band), -1, dtype=np.int64)
    activations = np.zeros((K, n_bands, n_per_band))
    for k in range(K):
        sampled, sampled_values = stats.random_rows[k], stats.random_values[k]
        exclude = np.flatnonzero((sampled < 0) | np.isin(sampled, stats.top_rows[k]))
        picks = draw_in_bands(np.abs(sampled_values), edges[k], n_per_band, rng, exclude)
        for b, pick in enumerate(picks):
            pick = pick[np.argsort(-np.abs(sampled_values[pick]), kind="stable")]
            rows[k, b, : pick.size] = sampled[pick]
            activations[k, b, : pick.size] = sampled_values[pick]
    band_levels = np.stack([levels[:-1], levels[1:]], axis=1)[::-1]
    return Bunch(levels=band_levels, edges=edges, rows=rows, activations=activations)
