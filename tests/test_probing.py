import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.decomposition import MiniBatchDictionaryLearning

from _helpers import RectifiedIdentity
from skmpsae import MatchingPursuitSAE, TopKSAE
from skmpsae._metrics.probing import encode_rows, mean_difference_latents
from skmpsae.metrics import sparse_probing, token_task_labels


@pytest.fixture
def planted():
    """Class 'b' rows have feature 3 on; the class never depends on the other features."""
    rng = np.random.RandomState(0)
    n = 600
    y = np.where(rng.rand(n) < 0.3, "b", "a")
    X = np.abs(rng.randn(n, 10)) * 0.3
    X[y == "b", 3] += 3.0
    return X, y


def test_mean_difference_selects_the_planted_latent(planted):
    X, y = planted
    codes = sp.csr_matrix(np.maximum(X, 0))
    chosen = mean_difference_latents(codes, np.flatnonzero(y == "b"), np.flatnonzero(y == "a"), 3)
    assert chosen[0] == 3
    # The naive definition: |mean difference| sorted, largest first.
    diff = np.abs(X[y == "b"].mean(0) - X[y == "a"].mean(0))
    assert_array_equal(chosen, np.argsort(-diff, kind="stable")[:3])


def test_sparse_probing_planted_latent_is_perfect_at_k1(planted):
    X, y = planted
    result = sparse_probing(RectifiedIdentity().fit(X), X, y, k=(1, 2, 10), random_state=0)
    assert_array_equal(result.k, [1, 2, 10])
    assert result.accuracy[0] == 1.0 and result.dense_accuracy == 1.0
    assert_array_equal(result.classes, ["a", "b"])
    assert result.latents[:, 0].tolist() == [3, 3]
    # Balanced: as many positives as negatives, so chance is one half.
    assert np.all(result.n_train % 2 == 0)


def test_sparse_probing_uninformative_latents_are_near_chance():
    rng = np.random.RandomState(0)
    X = rng.randn(2000, 6)
    y = rng.randint(0, 2, 2000)
    result = sparse_probing(RectifiedIdentity().fit(X), X, y, k=1, random_state=0)
    assert abs(result.accuracy[0] - 0.5) < 0.1 and abs(result.dense_accuracy - 0.5) < 0.1


def test_sparse_probing_splits_by_group_and_pools(planted):
    X, y = planted
    groups = np.arange(X.shape[0]) // 5
    # A text-level label: the group's, constant within the group.
    y_text = np.where(groups % 3 == 0, "yes", "no")
    X = X.copy()
    X[y_text == "yes", 5] += 1.0
    result = sparse_probing(
        RectifiedIdentity().fit(X), X, y_text, k=1, groups=groups, pooling="mean", random_state=0
    )
    n_groups = groups.max() + 1
    assert result.n_train.max() + result.n_test.max() <= n_groups
    assert result.latents[0, 0] == 5 and result.accuracy[0] == 1.0
    with pytest.raises(ValueError, match="one label per group"):
        sparse_probing(RectifiedIdentity().fit(X), X, y, groups=groups, pooling="mean", k=1)


def test_sparse_probing_runs_for_sklearn_and_skmpsae(planted):
    X, y = planted
    for est in (
        MatchingPursuitSAE(12, n_nonzero_coefs=2, max_iter=2, random_state=0),
        TopKSAE(12, n_nonzero_coefs=2, max_iter=2, random_state=0),
        MiniBatchDictionaryLearning(12, transform_algorithm="omp", random_state=0),
    ):
        est.fit(X)
        result = sparse_probing(est, X, y, k=(1, 5), random_state=0)
        assert np.all((result.accuracy >= 0) & (result.accuracy <= 1))
        # The codes are sparse and the same as transform's.
        codes = encode_rows(est, X, chunk_size=64)
        assert sp.issparse(codes)
        np.testing.assert_allclose(codes.toarray(), est.transform(X), atol=1e-6)


def test_sparse_probing_errors(planted):
    X, y = planted
    est = RectifiedIdentity().fit(X)
    with pytest.raises(ValueError, match="one class"):
        sparse_probing(est, X, np.zeros(X.shape[0]))
    with pytest.raises(ValueError, match="n_components=10"):
        sparse_probing(est, X, y, k=11)
    with pytest.raises(ValueError, match="one label per row"):
        sparse_probing(est, X, y[:-1])


def test_token_task_labels():
    tokens = [" The", " cat", "s", " 42", " .", " ,", " Zoo"]
    rows, labels = token_task_labels("first-letter", tokens)
    assert rows.tolist() == [0, 1, 6] and labels.tolist() == ["t", "c", "z"]
    rows, labels = token_task_labels("capitalised", tokens)
    assert labels.tolist() == ["capitalised", "lower", "lower", "capitalised"]
    assert token_task_labels("digit", tokens)[1].tolist().count("digits") == 1
    assert token_task_labels("punctuation", tokens)[1].tolist().count("punctuation") == 2
    rows, labels = token_task_labels("word-start", tokens)
    assert labels[2] == "continuation" and (labels == "word-start").sum() == 6
    rows, labels = token_task_labels("position", tokens, positions=[0, 3, 4, 15, 16, 64, 70])
    assert labels.tolist() == ["0-3", "0-3", "4-15", "4-15", "16-63", "64+", "64+"]


def test_token_task_labels_one_class_is_one_line():
    with pytest.raises(ValueError, match="'capitalised' has one class for this tokenizer"):
        token_task_labels("capitalised", [" the", " cat", "s"])
    with pytest.raises(ValueError, match="needs positions"):
        token_task_labels("position", [" a", " b"])
