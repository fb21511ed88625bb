"""MatchingPursuitSAE(min_cosine=...): the pursuit stops at the first step whose atom's cosine
with the residual is below min_cosine, in training and in transform."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from skmpsae import MatchingPursuitSAE


def _naive_mp(x, D, k, min_cosine):
    """Positive matching pursuit of one row, stopping as the parameter says."""
    residual, code = x.copy(), np.zeros(D.shape[0])
    for _ in range(k):
        corr = D @ residual
        j = int(np.argmax(corr))
        if corr[j] <= 0 or corr[j] < min_cosine * np.linalg.norm(residual):
            break
        code[j] += corr[j]
        residual -= corr[j] * D[j]
    return code


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    F = rng.randn(30, 12)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    codes = rng.rand(400, 30) * (rng.rand(400, 30) < 0.15) * 4
    return codes @ F + 0.05 * rng.randn(400, 12)


def test_transform_equals_naive_stopping_rule(data):
    sae = MatchingPursuitSAE(16, n_nonzero_coefs=6, min_cosine=0.4, max_iter=2, random_state=0)
    codes = sae.fit(data).transform(data)
    D, X = sae.components_.astype(np.float64), data - sae.intercept_
    expected = np.array([_naive_mp(x, D, 6, 0.4) for x in X])
    assert_allclose(codes, expected, atol=1e-4)
    plain = sae.set_params(min_cosine=0.0).transform(data)
    assert (codes != 0).sum() < (plain != 0).sum()  # the rule did stop some pursuits


def test_zero_min_cosine_is_the_default_model(data):
    a = MatchingPursuitSAE(16, n_nonzero_coefs=4, max_iter=2, random_state=0).fit(data)
    b = MatchingPursuitSAE(16, n_nonzero_coefs=4, max_iter=2, random_state=0, min_cosine=0.0)
    assert_allclose(a.components_, b.fit(data).components_)


def test_training_with_min_cosine_gives_sparser_codes(data):
    sae = MatchingPursuitSAE(16, n_nonzero_coefs=8, min_cosine=0.5, max_iter=3, random_state=0)
    codes = sae.fit(data).transform(data)
    assert np.isfinite(sae.loss_curve_).all()
    assert (codes != 0).sum(axis=1).mean() < 8


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "x"])
def test_min_cosine_validation(data, bad):
    with pytest.raises(ValueError, match="min_cosine"):
        MatchingPursuitSAE(8, min_cosine=bad, max_iter=1).fit(data)
