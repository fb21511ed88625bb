"""The scikit-learn contract beyond the generic checks, and behaviour on real digits."""

import copy
import pickle

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _helpers import ESTIMATOR_CLASSES, estimator_factory
from skmpsae import JumpReLUSAE, MatchingPursuitSAE, ReLUSAE, TopKSAE, matching_pursuit
from skmpsae.metrics import explained_variance

_small = estimator_factory(
    n_components=32, max_iter=3, batch_size=64, random_state=0, device="cpu", n_nonzero_coefs=4
)
ALL = list(ESTIMATOR_CLASSES.values())
# Estimators whose sparsity comes from a penalty, not k: values of alpha from weak to strong.
PENALISED = {ReLUSAE: [0.5, 2.0], JumpReLUSAE: [1e-3, 1e-2]}


@pytest.fixture(scope="module")
def mnist_split(mnist):
    # The digits as load_mnist gives them (float32 is exact on k / 255), 2,000 train, 1,000 test.
    return mnist[:2000].astype(np.float32), mnist[4000:].astype(np.float32)


@pytest.fixture(scope="module")
def mp_mnist(mnist_split):
    X_train, _ = mnist_split
    return MatchingPursuitSAE(
        n_components=128, n_nonzero_coefs=8, max_iter=8, random_state=0, device="cpu"
    ).fit(X_train)


@pytest.mark.parametrize("cls", ALL)
def test_grid_search_over_pipeline_uses_r2_score(cls, digits):
    name = cls.__name__.lower()
    param = f"{name}__alpha" if cls in PENALISED else f"{name}__n_nonzero_coefs"
    values = PENALISED.get(cls, [2, 6])
    pipe = make_pipeline(StandardScaler(), _small(cls))
    search = GridSearchCV(pipe, {param: values}, cv=2).fit(digits)
    assert search.best_params_[param] in values
    assert 0.0 < search.best_score_ <= 1.0
    if cls not in PENALISED:
        # More atoms per sample reconstruct better: the default score must see it.
        assert search.best_params_[param] == 6


@pytest.mark.parametrize("cls", ALL)
def test_clone_and_pickle_roundtrip(cls, digits):
    est = _small(cls).fit(digits)
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "components_")
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.transform(digits), est.transform(digits))
    assert not any(isinstance(v, (torch.Tensor, torch.nn.Module)) for v in vars(loaded).values())


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(cls, dtype, digits):
    X = digits.astype(dtype)
    est = _small(cls).fit(X)
    assert est.components_.dtype == dtype
    assert est.intercept_.dtype == dtype
    codes = est.transform(X)
    assert codes.dtype == dtype
    assert est.inverse_transform(codes).dtype == dtype
    # A model fitted in one precision encodes the other in that other precision.
    other = np.float64 if dtype == np.float32 else np.float32
    assert est.transform(X.astype(other)).dtype == other


@pytest.mark.parametrize("cls", ALL)
def test_pandas_output_and_feature_names(cls, digits):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(digits, columns=[f"px{i}" for i in range(digits.shape[1])])
    est = _small(cls).set_output(transform="pandas").fit(frame)
    out = est.transform(frame)
    assert isinstance(out, pd.DataFrame)
    prefix = cls.__name__.lower()
    assert list(out.columns) == [f"{prefix}{i}" for i in range(32)]
    assert list(est.feature_names_in_) == list(frame.columns)
    np.testing.assert_array_equal(est.get_feature_names_out(), out.columns)


@pytest.mark.parametrize("cls", ALL)
def test_random_state_reproducible_and_global_rng_untouched(cls, digits):
    state = torch.get_rng_state()
    a = _small(cls, random_state=7).fit(digits)
    b = _small(cls, random_state=7).fit(digits)
    c = _small(cls, random_state=8).fit(digits)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert not np.array_equal(a.components_, c.components_)


@pytest.mark.parametrize("cls", ALL)
def test_components_unit_norm_and_loss_decreases(cls, digits):
    est = _small(cls, max_iter=6).fit(digits)
    np.testing.assert_allclose(np.linalg.norm(est.components_, axis=1), 1.0, rtol=1e-5)
    assert est.n_iter_ == 6
    assert len(est.loss_curve_) == 6
    assert est.loss_curve_[-1] < 0.8 * est.loss_curve_[0]
    # 1,797 digits: 28 batches of 64, the 5 rows left joining the last of them.
    assert est.n_steps_ == 6 * 28


@pytest.mark.parametrize("cls", [MatchingPursuitSAE, TopKSAE])
def test_codes_have_at_most_k_nonzeros(cls, digits):
    est = _small(cls, n_nonzero_coefs=5).fit(digits)
    l0 = (est.transform(digits) != 0).sum(axis=1)
    assert l0.max() <= 5
    assert l0.mean() > 3


def test_relu_alpha_controls_sparsity(digits):
    dense = _small(ReLUSAE, alpha=0.1, max_iter=6).fit(digits)
    sparse_ = _small(ReLUSAE, alpha=3.0, max_iter=6).fit(digits)
    l0 = lambda est: (est.transform(digits) != 0).sum(axis=1).mean()  # noqa: E731
    assert l0(sparse_) < 0.7 * l0(dense)


def test_mp_reconstructs_held_out_digits(mp_mnist, mnist_split):
    _, X_test = mnist_split
    r2 = mp_mnist.score(X_test)
    # A mean-only model scores 0; 8 atoms per digit from 128 learned ones explain most variance.
    assert r2 > 0.6
    codes = mp_mnist.transform(X_test)
    assert (codes >= 0).all()
    assert explained_variance(X_test, mp_mnist.inverse_transform(codes)) == pytest.approx(r2)


def test_mp_more_steps_never_hurt_on_digits(mp_mnist, mnist_split):
    _, X_test = mnist_split
    est = copy.deepcopy(mp_mnist)  # a fitted copy: set_params below must not touch mp_mnist
    scores = []
    for k in [1, 2, 4, 8, 16, 32, 64]:
        est.set_params(transform_n_nonzero_coefs=k)
        scores.append(est.score(X_test))
    assert all(b >= a - 1e-6 for a, b in zip(scores, scores[1:], strict=False)), scores
    assert scores[-1] > scores[3] + 0.05  # encoding past the training k keeps improving


def test_mp_transform_tol_stops_each_sample_at_its_residual(mp_mnist, mnist_split):
    _, X_test = mnist_split
    est = pickle.loads(pickle.dumps(mp_mnist))
    Xc = X_test - est.intercept_
    tol = 0.3 * float(np.median((Xc**2).sum(axis=1)))
    # Enough steps that no sample runs out of them before the tolerance or convergence.
    est.set_params(transform_tol=tol, transform_n_nonzero_coefs=5000)
    codes = est.transform(X_test)
    residual = X_test - est.inverse_transform(codes)
    reached = (residual**2).sum(axis=1) <= tol * (1 + 1e-4)
    assert reached.mean() > 0.9
    # The samples that miss the tolerance are those whose residual no atom can still reduce
    # noticeably: positive pursuit has (nearly) converged on the cone of the atoms.
    assert ((residual[~reached] @ est.components_.T).max(axis=1) < 0.01 * np.sqrt(tol)).all()
    l0 = (codes != 0).sum(axis=1)
    assert l0.min() < l0.max()  # the stopping point adapts per sample


def test_mp_estimator_matches_public_function(mp_mnist, mnist_split):
    _, X_test = mnist_split
    codes = matching_pursuit(X_test - mp_mnist.intercept_, mp_mnist.components_, n_nonzero_coefs=8)
    np.testing.assert_allclose(mp_mnist.transform(X_test), codes, atol=1e-5)


@pytest.mark.parametrize("cls", ALL)
def test_inverse_transform_accepts_sparse_codes(cls, digits):
    est = _small(cls).fit(digits)
    codes = est.transform(digits)
    np.testing.assert_allclose(
        est.inverse_transform(sparse.csr_matrix(codes)), est.inverse_transform(codes), atol=1e-6
    )


@pytest.mark.parametrize("cls", ALL)
def test_partial_fit_streams_and_survives_pickling(cls, digits):
    # A weak L1 penalty, so that ReLU's reconstruction too must improve as its penalty warms up.
    est = _small(cls, alpha=0.1) if cls is ReLUSAE else _small(cls)
    if cls is JumpReLUSAE:
        est.set_params(alpha=1e-4)
    for chunk in np.array_split(digits, 4):
        est.partial_fit(chunk)
    assert est.n_iter_ == 4
    first = est.score(digits)
    resumed = pickle.loads(pickle.dumps(est))
    for _ in range(4):
        resumed.partial_fit(digits)
    assert resumed.n_iter_ == 8
    assert resumed.score(digits) > first


def test_fit_without_intercept_keeps_zero_bias(digits):
    est = _small(MatchingPursuitSAE, fit_intercept=False).fit(digits)
    np.testing.assert_array_equal(est.intercept_, 0.0)


def test_dict_init_is_used_and_normalised(digits):
    init = np.random.RandomState(0).randn(32, digits.shape[1])
    est = _small(MatchingPursuitSAE, dict_init=init, max_iter=1, learning_rate=1e-8).fit(digits)
    expected = init / np.linalg.norm(init, axis=1, keepdims=True)
    np.testing.assert_allclose(est.components_, expected, atol=1e-4)
    with pytest.raises(ValueError, match="dict_init has shape"):
        _small(MatchingPursuitSAE, dict_init=init[:, :10]).fit(digits)


def test_verbose_reports_epochs_and_dead_atoms(digits, capsys):
    _small(TopKSAE, verbose=1, max_iter=2).fit(digits)
    out = capsys.readouterr().out
    assert "epoch 2" in out and "dead atoms" in out
