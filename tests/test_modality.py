"""modality_scores against a naive loop, and the modality summary of several row files (fit
and evaluate on the command line)."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from skmpsae import MatchingPursuitSAE, TopKSAE
from skmpsae.inspect import modality_scores

RNG = np.random.RandomState(0)
X_IMAGE = RNG.rand(300, 8).astype(np.float32)
X_TEXT = (RNG.rand(30, 8) + np.eye(8)[RNG.randint(0, 8, 30)]).astype(np.float32)


@pytest.mark.parametrize("cls", [TopKSAE, MatchingPursuitSAE])
def test_modality_scores_equal_a_naive_loop(cls):
    sae = cls(n_components=24, n_nonzero_coefs=2, max_iter=3, random_state=0)
    sae.fit(np.vstack([X_IMAGE, X_TEXT]))
    result = modality_scores(sae, X_IMAGE, X_TEXT, chunk_size=7)
    codes_image, codes_text = np.abs(sae.transform(X_IMAGE)), np.abs(sae.transform(X_TEXT))
    expected, bimodal, firing = [], 0, 0
    for j in range(24):
        image = sum(codes_image[i, j] for i in range(len(X_IMAGE))) / len(X_IMAGE)
        text = sum(codes_text[i, j] for i in range(len(X_TEXT))) / len(X_TEXT)
        if image + text == 0:
            expected.append(np.nan)
            continue
        expected.append(image / (image + text))
        firing += 1
        bimodal += 0.1 <= expected[-1] <= 0.9
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
    assert result.n_firing == firing and result.bimodal_fraction == pytest.approx(bimodal / firing)
    np.testing.assert_allclose(result.image_mass, codes_image.mean(axis=0), rtol=1e-5)


def test_modality_scores_weigh_each_modality_per_row():
    """An atom as strong on one caption as on each of 100 patches scores 0.5."""

    class Fixed(BaseEstimator):  # codes equal to the rows: masses known by hand
        def fit(self, X):
            self.components_ = np.eye(2)
            return self

        def transform(self, X):
            return np.asarray(X, dtype=float)

    image = np.tile([[1.0, 0.0]], (100, 1))
    text = np.array([[1.0, 0.0], [0.0, 0.0]])
    est = Fixed().fit(None)
    with pytest.raises(ValueError, match="no atom fires"):
        modality_scores(est, np.zeros((3, 2)), np.zeros((2, 2)))
    result = modality_scores(est, image, text)
    assert result.scores[0] == pytest.approx(1 / 1.5) and np.isnan(result.scores[1])
    assert result.n_firing == 1 and result.bimodal_fraction == 1.0
    with pytest.raises(ValueError, match="X_text has no rows"):
        modality_scores(est, image, np.zeros((0, 2)))
    with pytest.raises(ValueError, match="X_image has 3 features"):
        modality_scores(est, np.zeros((4, 3)), text)
