"""Which modality each atom of an SAE trained on image and text rows serves: its share of
activation mass from image rows, each modality's mass taken per row so that many patch rows
do not outweigh a few caption rows."""

from numbers import Integral
from typing import NamedTuple

import numpy as np

from .._compat import validate_params
from .._utils import NotBoolInterval
from .inputs import _ESTIMATOR, _check_rows
from .stats import _DEFAULT_CHUNK

# An atom is bimodal when neither modality has more than 90% of its mass.
BIMODAL = (0.1, 0.9)


class ModalityScores(NamedTuple):
    """What :func:`modality_scores` returns.

    Attributes
    ----------
    scores : ndarray of shape (n_components,)
        Each atom's share of activation mass from image rows: 0 fires on text rows only, 1 on
        image rows only; NaN for an atom that fires on no row of either.
    image_mass : ndarray of shape (n_components,)
        Each atom's mean absolute activation over the image rows.
    text_mass : ndarray of shape (n_components,)
        The same over the text rows.
    n_firing : int
        Atoms that fire on some row (those with a score).
    bimodal_fraction : float
        The fraction of the firing atoms whose score lies in [0.1, 0.9].
    """

    scores: np.ndarray
    image_mass: np.ndarray
    text_mass: np.ndarray
    n_firing: int
    bimodal_fraction: float


def _mean_abs_code(estimator, X, chunk_size):
    total = np.zeros(estimator.components_.shape[0])
    for start in range(0, X.shape[0], chunk_size):
        codes = estimator.transform(np.asarray(X[start : start + chunk_size]))
        total += np.abs(codes).sum(axis=0, dtype=np.float64)
    return total / X.shape[0]


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "X_image": ["array-like"],
        "X_text": ["array-like"],
        "chunk_size": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def modality_scores(estimator, X_image, X_text, *, chunk_size=_DEFAULT_CHUNK):
    """Each atom's share of activation mass from image rows, and the fraction of bimodal atoms.

    An atom's mass in a modality is its mean absolute activation over that modality's rows
    (zeros included), so each modality weighs the same whatever its row count: an atom that
    fires as strongly on captions as on patches scores 0.5 even with a hundred patch rows per
    caption. The score is ``image_mass / (image_mass + text_mass)``. Atoms that fire on no
    row get NaN and are left out of ``n_firing`` and ``bimodal_fraction``.

    Parameters
    ----------
    estimator : fitted skmpsae estimator
        An SAE trained on rows of both modalities (e.g. ``skmpsae fit IMAGES.npy TEXTS.npy``).
    X_image : array-like of shape (n_image_rows, n_features)
        Image rows (a memmap is read chunk by chunk), float32 or float64.
    X_text : array-like of shape (n_text_rows, n_features)
        Text rows in the same space.
    chunk_size : int, default=4096
        Rows encoded at a time.

    Returns
    -------
    result : ModalityScores
        ``scores``, ``image_mass``, ``text_mass``, ``n_firing`` and ``bimodal_fraction``.

    Raises
    ------
    ValueError
        If either set of rows is empty, of another width than the atoms, or if no atom
        fires on any row (there is then no score to summarise).

    See Also
    --------
    feature_statistics : Each atom's firing rate and top rows over one set of rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import TopKSAE
    >>> from skmpsae.inspect import modality_scores
    >>> rng = np.random.RandomState(0)
    >>> X_image = rng.rand(200, 8).astype(np.float32)
    >>> X_text = rng.rand(20, 8).astype(np.float32)
    >>> sae = TopKSAE(n_components=16, n_nonzero_coefs=2, max_iter=2, random_state=0)
    >>> result = modality_scores(sae.fit(np.vstack([X_image, X_text])), X_image, X_text)
    >>> result.scores.shape, 0 <= result.bimodal_fraction <= 1
    ((16,), True)
    """
    masses = []
    for name, X in (("X_image", X_image), ("X_text", X_text)):
        X = _check_rows(estimator, X, name)
        if X.shape[0] == 0:
            raise ValueError(f"{name} has no rows.")
        masses.append(_mean_abs_code(estimator, X, chunk_size))
    image_mass, text_mass = masses
    total = image_mass + text_mass
    firing = total > 0
    if not firing.any():
        raise ValueError("no atom fires on any row of X_image or X_text: nothing to score.")
    scores = np.full(total.shape, np.nan)
    scores[firing] = image_mass[firing] / total[firing]
    alive = scores[firing]
    bimodal = (alive >= BIMODAL[0]) & (alive <= BIMODAL[1])
    return ModalityScores(
        scores=scores,
        image_mass=image_mass,
        text_mass=text_mass,
        n_firing=int(firing.sum()),
        bimodal_fraction=float(bimodal.mean()),
    )
