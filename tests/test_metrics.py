import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import ortho_group
from sklearn.decomposition import PCA
from sklearn.model_selection import cross_validate
from sklearn.preprocessing import FunctionTransformer

from skmpsae._metrics import dictionary as _dictionary_metrics
from skmpsae.metrics import (
    babel,
    component_usage,
    dead_components,
    dead_fraction,
    explained_variance,
    explained_variance_scorer,
    feature_recovery,
    l0,
    mutual_coherence,
    neg_l0_scorer,
)


@pytest.fixture
def X():
    return np.random.RandomState(0).randn(40, 6)


def test_explained_variance_reference_points(X):
    assert explained_variance(X, X) == 1.0
    means = np.broadcast_to(X.mean(axis=0), X.shape)
    assert explained_variance(X, means) == pytest.approx(0.0, abs=1e-12)
    # Predicting zeros for non-centred data is worse than predicting the mean.
    assert explained_variance(X + 5.0, np.zeros_like(X)) < 0.0


def test_explained_variance_matches_formula(X):
    X_hat = X + 0.3 * np.random.RandomState(1).randn(*X.shape)
    expected = 1 - np.sum((X - X_hat) ** 2) / np.sum((X - X.mean(axis=0)) ** 2)
    result = explained_variance(X, X_hat)
    assert isinstance(result, float)
    assert result == pytest.approx(expected, rel=1e-12)


def test_explained_variance_is_pooled_not_averaged_per_feature():
    # Feature 1 has 100x the variance of feature 0: a per-feature average of R2 would
    # weigh the badly reconstructed small feature equally; the pooled R2 does not.
    X = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    X_hat = X.copy()
    X_hat[:, 0] = X[:, 0].mean()
    assert explained_variance(X, X_hat) == pytest.approx(1 - 5 / (5 + 500))


def test_explained_variance_constant_data():
    X = np.ones((5, 3))
    assert explained_variance(X, X) == 1.0
    assert explained_variance(X, X + 1.0) == 0.0


def test_explained_variance_float32_input_is_accurate():
    X = np.random.RandomState(0).rand(1000, 50).astype(np.float32) + 100
    assert explained_variance(X, X) == 1.0


def test_explained_variance_validation(X):
    with pytest.raises(ValueError, match="same shape"):
        explained_variance(X, X[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        explained_variance(X, np.full_like(X, np.nan))


@pytest.fixture
def codes():
    return np.array([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, -3.0], [0.0, 1.0, 0.0, 4.0]])


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo"])
def test_sparsity_metrics(codes, fmt):
    C = codes if fmt == "dense" else sp.coo_matrix(codes).asformat(fmt)
    assert l0(C) == pytest.approx(5 / 3)
    assert_allclose(component_usage(C), [0.0, 2 / 3, 0.0, 1.0])
    assert_array_equal(dead_components(C), [True, False, True, False])
    assert dead_fraction(C) == 0.5
    assert isinstance(dead_fraction(C), float) and isinstance(l0(C), float)


def test_sparse_explicit_zeros_are_not_counted(codes):
    C = sp.csr_matrix(codes)
    C.data[C.data == 2.0] = 0.0  # still stored, but zero
    assert C.nnz == 5
    assert l0(C) == pytest.approx(4 / 3)
    assert_allclose(component_usage(C), [0.0, 1 / 3, 0.0, 1.0])


def test_sparsity_metrics_reject_empty():
    with pytest.raises(ValueError, match="0 sample"):
        l0(np.zeros((0, 3)))


def test_coherence_of_orthonormal_basis_is_zero():
    Q = ortho_group.rvs(8, random_state=0)
    assert mutual_coherence(Q) == pytest.approx(0.0, abs=1e-12)
    assert babel(Q, 7) == pytest.approx(0.0, abs=1e-12)


def test_coherence_and_babel_hand_computed():
    # Unnormalised rows on purpose: the metrics normalise them.
    D = np.array([[2.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    # Unit rows: e1, (.6,.8,0), e3, (0,1,1)/sqrt2. |cosines| between distinct atoms:
    s = 1 / np.sqrt(2)
    cos = np.array(
        [
            [0, 0.6, 0, 0],
            [0.6, 0, 0, 0.8 * s],
            [0, 0, 0, s],
            [0, 0.8 * s, s, 0],
        ]
    )
    assert mutual_coherence(D) == pytest.approx(s)
    assert babel(D, 1) == pytest.approx(s)  # mu_1(1) is the mutual coherence
    assert babel(D, 2) == pytest.approx(0.8 * s + s)  # atom 3: s + 0.8 s
    assert babel(D, 3) == pytest.approx(cos.sum(axis=1).max())


def test_babel_is_blockwise_consistent(monkeypatch):
    D = np.random.RandomState(0).randn(50, 10)
    full = [babel(D, p) for p in (1, 5, 49)]
    coherence = mutual_coherence(D)
    monkeypatch.setattr(_dictionary_metrics, "_GRAM_BLOCK_ENTRIES", 120)  # blocks of 2 rows
    assert_allclose([babel(D, p) for p in (1, 5, 49)], full, rtol=1e-12)
    assert mutual_coherence(D) == pytest.approx(coherence, rel=1e-12)
    assert coherence == pytest.approx(full[0], rel=1e-12)


def test_coherence_of_repeated_atom_is_one():
    D = np.array([[1.0, 2.0], [-2.0, -4.0], [1.0, 0.0]])
    assert mutual_coherence(D) == pytest.approx(1.0, abs=1e-12)  # sign is ignored
    assert mutual_coherence(D[:1]) == 0.0


def test_geometry_validation():
    D = np.array([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="all-zero row"):
        mutual_coherence(D)
    with pytest.raises(ValueError, match="p must be between 1 and n_components - 1 = 2, got p=3"):
        babel(np.eye(3), 3)
    with pytest.raises(ValueError, match=r"'p' parameter of babel .* range \[1, inf\). Got 0"):
        babel(np.eye(3), 0)
    with pytest.raises(TypeError, match=r"'p' parameter of babel must be an int .* Got 1.5"):
        babel(np.eye(3), 1.5)


def test_feature_recovery_of_permuted_sign_flipped_copy():
    rng = np.random.RandomState(0)
    F = rng.randn(20, 16)
    perm = rng.permutation(20)
    D = F[perm] * rng.choice([-1.0, 1.0], size=(20, 1)) * 3.0
    D = np.vstack([D, rng.randn(5, 16)])  # extra atoms do not hurt
    score, cosines, atoms = feature_recovery(F, D, return_matches=True)
    assert score == pytest.approx(1.0)
    assert_allclose(cosines, 1.0)
    assert_array_equal(perm[atoms], np.arange(20))


def test_feature_recovery_partial():
    F = np.eye(4)
    D = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    # A blended atom matches features 0 and 1 at cos 1/sqrt2; feature 3 is missed.
    score, cosines, _ = feature_recovery(F, D, return_matches=True)
    assert_allclose(cosines, [1 / np.sqrt(2), 1 / np.sqrt(2), 1.0, 0.0])
    assert score == pytest.approx((np.sqrt(2) + 1) / 4)
    assert isinstance(feature_recovery(F, D), float)


def test_feature_recovery_validation():
    with pytest.raises(ValueError, match="same number of columns"):
        feature_recovery(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="true_features has 1 all-zero"):
        feature_recovery(np.zeros((1, 3)), np.eye(3))


def test_scorers_with_sklearn_transformers(X):
    pca = PCA(n_components=2).fit(X)
    expected = explained_variance(X, pca.inverse_transform(pca.transform(X)))
    assert explained_variance_scorer(pca, X) == pytest.approx(expected)
    assert explained_variance_scorer(PCA(n_components=6).fit(X), X) == pytest.approx(1.0)
    identity = FunctionTransformer()
    assert neg_l0_scorer(identity, np.array([[0.0, 1.0], [2.0, 3.0]])) == -1.5


def test_scorers_plug_into_cross_validate(X):
    result = cross_validate(
        PCA(n_components=3),
        X,
        cv=2,
        scoring={"r2": explained_variance_scorer, "neg_l0": neg_l0_scorer},
    )
    assert np.all(result["test_r2"] < 1.0)
    assert_allclose(result["test_neg_l0"], -3.0)


def test_scorers_need_transform_methods(X):
    with pytest.raises(TypeError, match="inverse_transform"):
        explained_variance_scorer(object(), X)
    with pytest.raises(TypeError, match="transform"):
        neg_l0_scorer(object(), X)
