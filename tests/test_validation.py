"""Bad input gets a ValueError or TypeError that names the problem, everywhere.

Covers the three estimators (data, parameters, fitted state), the pursuit functions and the
metrics. Fits here are one epoch on a few dozen samples: validation happens before training.
"""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError

from _helpers import ESTIMATORS, estimator_factory
from skmpsae import matching_pursuit, metrics, orthogonal_matching_pursuit

N_FEATURES = 6
N_COMPONENTS = 8


def _data(n_samples=40, n_features=N_FEATURES, seed=0):
    return np.random.RandomState(seed).rand(n_samples, n_features).astype(np.float32)


def _with(X, row, col, value):
    X = X.copy()
    X[row, col] = value
    return X


make_estimator = estimator_factory(
    n_components=N_COMPONENTS, max_iter=1, batch_size=16, random_state=0, n_nonzero_coefs=2
)
WITH_K = ["mp", "topk", "batchtopk", "matryoshka"]
TOPK_LIKE = ["topk", "batchtopk", "matryoshka"]

# (input, exception, regex the message must match). Every entry is tried on fit and transform.
BAD_X = {
    "nan": (_with(_data(), 0, 0, np.nan), ValueError, "contains NaN"),
    "inf": (_with(_data(), 3, 1, np.inf), ValueError, "contains infinity"),
    "-inf": (_with(_data(), 3, 1, -np.inf), ValueError, "contains infinity"),
    "None in object array": (np.array([[1.0, None]] * 5, dtype=object), ValueError, "NaN"),
    "no samples": (np.empty((0, N_FEATURES)), ValueError, "0 sample"),
    "no features": (np.empty((5, 0)), ValueError, "0 feature"),
    "1-D": (_data()[0], ValueError, "Expected 2D array, got 1D array"),
    "3-D": (_data().reshape(40, 3, 2), ValueError, "dim 3"),
    "scalar": (3.0, ValueError, "Expected 2D array, got scalar"),
    "None": (None, ValueError, "Expected 2D array, got scalar"),
    "strings": (np.array([["a", "b"]] * 5), ValueError, "could not convert string to float"),
    "mixed object": (np.array([[1, "x"]] * 5, dtype=object), ValueError, "could not convert"),
    "ragged list": ([[1.0, 2.0], [3.0]], ValueError, "inhomogeneous"),
    "complex": (_data().astype(np.complex64), ValueError, "Complex data not supported"),
    "sparse csr": (sp.csr_matrix(_data()), TypeError, "dense data is required"),
    "sparse coo": (sp.coo_matrix(_data()), TypeError, "dense data is required"),
}


@pytest.fixture(scope="module", params=ESTIMATORS)
def fitted(request):
    return make_estimator(request.param).fit(_data())


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("case", list(BAD_X))
def test_fit_rejects_bad_data(estimator, case):
    X, error, message = BAD_X[case]
    sae = make_estimator(estimator)
    with pytest.raises(error, match=message):
        sae.fit(X)
    assert not hasattr(sae, "components_")


@pytest.mark.parametrize("case", list(BAD_X))
def test_transform_and_score_reject_bad_data(fitted, case):
    X, error, message = BAD_X[case]
    before = fitted.components_.copy()
    for method in (fitted.transform, fitted.score, fitted.partial_fit):
        with pytest.raises(error, match=message):
            method(X)
    np.testing.assert_array_equal(fitted.components_, before)


def test_feature_count_must_match_fit(fitted):
    name = type(fitted).__name__
    message = f"X has 5 features, but {name} is expecting {N_FEATURES} features"
    for method in (fitted.transform, fitted.score, fitted.partial_fit):
        with pytest.raises(ValueError, match=message):
            method(_data(n_features=5))
    with pytest.raises(ValueError, match="X has 7 features"):
        fitted.transform(_data(n_features=7))


def test_inverse_transform_rejects_bad_codes(fitted):
    good = fitted.transform(_data(5))
    with pytest.raises(ValueError, match=f"n_components={N_COMPONENTS} columns, got 7"):
        fitted.inverse_transform(good[:, :7])
    with pytest.raises(ValueError, match=f"n_components={N_COMPONENTS} columns, got 9"):
        fitted.inverse_transform(np.hstack([good, good[:, :1]]))
    with pytest.raises(ValueError, match="Expected 2D array, got 1D"):
        fitted.inverse_transform(good[0])
    with pytest.raises(ValueError, match="contains NaN"):
        fitted.inverse_transform(_with(good, 0, 0, np.nan))
    with pytest.raises(ValueError, match="Complex data not supported"):
        fitted.inverse_transform(good.astype(np.complex128))
    with pytest.raises(ValueError, match="0 sample"):
        fitted.inverse_transform(np.zeros((0, N_COMPONENTS)))
    # Sparse codes are accepted (documented): same result as dense, up to the float32
    # rounding of sums of terms of order 1 (an entry near zero has no relative precision).
    np.testing.assert_allclose(
        fitted.inverse_transform(sp.csr_matrix(good)),
        fitted.inverse_transform(good),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_unfitted_estimator_raises_not_fitted(estimator):
    sae = make_estimator(estimator)
    calls = {
        "transform": lambda: sae.transform(_data()),
        "inverse_transform": lambda: sae.inverse_transform(np.zeros((2, N_COMPONENTS))),
        "score": lambda: sae.score(_data()),
        "to_sparse_coder": sae.to_sparse_coder,
    }
    for method, call in calls.items():
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
            pytest.fail(f"{method} before fit did not raise")


_INT_MESSAGE = "must be an int"
BAD_PARAMS = [
    # (estimators, parameter, value, regex)
    (ESTIMATORS, "n_components", 0, "'n_components' parameter .* range \\[1, inf\\)"),
    (ESTIMATORS, "n_components", -1, "'n_components' parameter .* range \\[1, inf\\)"),
    (ESTIMATORS, "n_components", 2.5, "'n_components' parameter .* int"),
    (ESTIMATORS, "n_components", "3", "'n_components' parameter .* int"),
    (ESTIMATORS, "n_components", None, "'n_components' parameter .* int"),
    (ESTIMATORS, "n_components", True, "'n_components' parameter .* Got True instead"),
    (WITH_K, "n_nonzero_coefs", 0, "'n_nonzero_coefs' parameter .* range \\[1, inf\\)"),
    (WITH_K, "n_nonzero_coefs", -1, "'n_nonzero_coefs' parameter .* range"),
    (WITH_K, "n_nonzero_coefs", 2.5, "'n_nonzero_coefs' parameter .* int"),
    (WITH_K, "n_nonzero_coefs", "3", "'n_nonzero_coefs' parameter .* int"),
    (WITH_K, "n_nonzero_coefs", None, "'n_nonzero_coefs' parameter .* int"),
    (WITH_K, "n_nonzero_coefs", True, "'n_nonzero_coefs' parameter .* Got True instead"),
    (WITH_K, "transform_n_nonzero_coefs", 0, "'transform_n_nonzero_coefs' parameter"),
    (WITH_K, "transform_n_nonzero_coefs", 2.5, "'transform_n_nonzero_coefs' parameter"),
    (WITH_K, "transform_n_nonzero_coefs", "3", "'transform_n_nonzero_coefs' parameter"),
    (WITH_K, "transform_n_nonzero_coefs", True, "Got True instead"),
    (WITH_K, "transform_n_nonzero_coefs", False, "'transform_n_nonzero_coefs' param"),
    (ESTIMATORS, "learning_rate", 0, "'learning_rate' parameter .* range \\(0.0, inf\\)"),
    (ESTIMATORS, "learning_rate", -1e-3, "'learning_rate' parameter"),
    (ESTIMATORS, "learning_rate", np.nan, "'learning_rate' parameter"),
    (ESTIMATORS, "learning_rate", np.inf, "'learning_rate' parameter"),
    (ESTIMATORS, "learning_rate", "0.1", "'learning_rate' parameter"),
    (ESTIMATORS, "batch_size", 0, "'batch_size' parameter"),
    (ESTIMATORS, "batch_size", 2.5, "'batch_size' parameter"),
    (ESTIMATORS, "max_iter", 0, "'max_iter' parameter"),
    (ESTIMATORS, "fit_intercept", "yes", "'fit_intercept' parameter"),
    (ESTIMATORS, "random_state", "seed", "'random_state' parameter"),
    (["mp"], "transform_algorithm", "lars", "'transform_algorithm' .* must be a str among"),
    (["mp"], "transform_tol", -1.0, "'transform_tol' parameter"),
    (["mp"], "positive_code", "yes", "'positive_code' parameter"),
    (["mp"], "revival_coef", -0.1, "'revival_coef' parameter"),
    (TOPK_LIKE, "aux_coef", -0.1, "'aux_coef' parameter"),
    (["relu", "jumprelu"], "alpha", -1.0, "'alpha' parameter"),
    (["relu", "jumprelu"], "alpha", "strong", "'alpha' parameter"),
    (["jumprelu"], "bandwidth", 0.0, "'bandwidth' parameter"),
    (["jumprelu"], "bandwidth", np.nan, "'bandwidth' parameter"),
    (["matryoshka"], "prefix_sizes", [4, 2], "prefix_sizes must be strictly increasing"),
    (["matryoshka"], "prefix_sizes", [0, 4], "prefix_sizes must be strictly increasing"),
    (["matryoshka"], "prefix_sizes", [4, 9], "each between 1 and n_components=8"),
    (["matryoshka"], "prefix_sizes", [2.5], "prefix_sizes must be a non-empty 1-d sequence"),
    (["matryoshka"], "prefix_sizes", [], "prefix_sizes must be a non-empty 1-d sequence"),
    (["matryoshka"], "prefix_sizes", [[2, 4]], "prefix_sizes must be a non-empty 1-d sequence"),
    (["matryoshka"], "prefix_sizes", [True, 4], "prefix_sizes must be a non-empty 1-d sequence"),
    (["matryoshka"], "prefix_sizes", "4", "'prefix_sizes' parameter"),
    (ESTIMATORS, "early_stopping", "yes", "'early_stopping' parameter"),
    (ESTIMATORS, "validation_fraction", 0.0, "'validation_fraction' parameter"),
    (ESTIMATORS, "validation_fraction", 1.0, "'validation_fraction' parameter"),
    (ESTIMATORS, "n_iter_no_change", 0, "'n_iter_no_change' parameter"),
    (ESTIMATORS, "tol", -1e-3, "'tol' parameter"),
    (ESTIMATORS, "device", "gpu9", "device='gpu9' is not a valid torch device"),
    (ESTIMATORS, "device", 3.0, "'device' parameter"),
    (ESTIMATORS, "dict_init", np.ones((3, N_FEATURES)), "dict_init has shape \\(3, 6\\)"),
    (ESTIMATORS, "dict_init", np.ones((N_COMPONENTS, 5)), "dict_init has shape \\(8, 5\\)"),
    (ESTIMATORS, "dict_init", np.full((N_COMPONENTS, N_FEATURES), np.nan), "dict_init contains"),
]


@pytest.mark.parametrize(
    "estimator, param, value, message",
    [(e, p, v, m) for names, p, v, m in BAD_PARAMS for e in names],
    ids=[f"{e}-{p}={v!r}"[:60] for names, p, v, m in BAD_PARAMS for e in names],
)
def test_bad_parameters_are_named(estimator, param, value, message):
    sae = make_estimator(estimator, **{param: value})
    with pytest.raises((ValueError, TypeError), match=message):
        sae.fit(_data())
    assert not hasattr(sae, "components_")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_says_so():
    with pytest.raises(ValueError, match="asks for CUDA but torch sees no GPU"):
        make_estimator("mp", device="cuda").fit(_data())


def test_more_steps_than_atoms_is_valid_for_mp():
    # MP may pick an atom again, so k > n_components is legal.
    codes = make_estimator("mp", n_nonzero_coefs=20).fit(_data()).transform(_data())
    assert codes.shape == (40, N_COMPONENTS)
    assert np.isfinite(codes).all()


@pytest.mark.parametrize("estimator", TOPK_LIKE)
def test_topk_keeps_every_latent_when_k_exceeds_n_components(estimator):
    # k == n_components keeps every latent; a larger k does the same, with a warning naming
    # both numbers (so that the defaults, k=16, work at any n_components).
    exact = make_estimator(estimator, n_nonzero_coefs=N_COMPONENTS, random_state=0).fit(_data())
    larger = make_estimator(estimator, n_nonzero_coefs=N_COMPONENTS + 1, random_state=0)
    with pytest.warns(UserWarning, match="n_nonzero_coefs=9 is larger than n_components=8"):
        larger.fit(_data())
    np.testing.assert_array_equal(larger.components_, exact.components_)
    fitted = make_estimator(estimator).fit(_data())
    fitted.set_params(transform_n_nonzero_coefs=N_COMPONENTS + 1)
    with pytest.warns(UserWarning, match="transform_n_nonzero_coefs=9 is larger than n_comp"):
        codes = fitted.transform(_data())
    expected = fitted.set_params(transform_n_nonzero_coefs=N_COMPONENTS).transform(_data())
    np.testing.assert_array_equal(codes, expected)


# -- pursuit functions ---------------------------------------------------------------------
PURSUITS = [matching_pursuit, orthogonal_matching_pursuit]
_DICTIONARY = np.random.RandomState(1).randn(N_COMPONENTS, N_FEATURES)


@pytest.mark.parametrize("pursuit", PURSUITS)
@pytest.mark.parametrize("case", list(BAD_X))
def test_pursuit_rejects_bad_signals_and_dictionaries(pursuit, case):
    bad, error, message = BAD_X[case]
    if case in ("scalar", "None"):
        # Caught by the function's parameter validation before any array conversion.
        message = "parameter of .*matching_pursuit must be an array-like"
    with pytest.raises(error, match=message):
        pursuit(bad, _DICTIONARY, n_nonzero_coefs=2)
    if case not in ("no samples", "no features"):
        with pytest.raises(error, match=message):
            pursuit(_data(), bad, n_nonzero_coefs=2)


@pytest.mark.parametrize("pursuit", PURSUITS)
def test_pursuit_rejects_bad_shapes_and_parameters(pursuit):
    X = _data()
    with pytest.raises(ValueError, match="dictionary has 5 features per atom but X has 6"):
        pursuit(X, _DICTIONARY[:, :5])
    with pytest.raises(ValueError, match="0 sample"):
        pursuit(X, np.zeros((0, N_FEATURES)))
    for k in (0, -1, 2.5, "3"):
        with pytest.raises(ValueError, match="'n_nonzero_coefs' parameter .* int in the range"):
            pursuit(X, _DICTIONARY, n_nonzero_coefs=k)
    with pytest.raises(TypeError, match="'n_nonzero_coefs' parameter .* Got True instead"):
        pursuit(X, _DICTIONARY, n_nonzero_coefs=True)
    for tol in (-1.0, np.nan, np.inf, "0.1"):
        with pytest.raises(ValueError, match="'tol' parameter"):
            pursuit(X, _DICTIONARY, tol=tol)
    with pytest.raises(ValueError, match="'positive' parameter"):
        pursuit(X, _DICTIONARY, positive="yes")


@pytest.mark.parametrize("pursuit", PURSUITS)
def test_pursuit_odd_but_valid_input(pursuit):
    X = _data()
    # Zero atoms are never used; more steps than atoms is fine; lists and ints are converted.
    zero_atoms = np.vstack([_DICTIONARY[:4], np.zeros((4, N_FEATURES))])
    codes = pursuit(X, zero_atoms, n_nonzero_coefs=3)
    assert np.all(codes[:, 4:] == 0) and np.isfinite(codes).all()
    assert np.all(pursuit(X, np.zeros((3, N_FEATURES)), n_nonzero_coefs=2) == 0)
    assert pursuit(X, _DICTIONARY, n_nonzero_coefs=100).shape == (40, N_COMPONENTS)
    from_list = pursuit(X.astype(np.float64).tolist(), _DICTIONARY.tolist(), n_nonzero_coefs=2)
    np.testing.assert_allclose(
        from_list, pursuit(X.astype(np.float64), _DICTIONARY, n_nonzero_coefs=2)
    )
    assert pursuit((X * 10).astype(int), _DICTIONARY, n_nonzero_coefs=2).dtype == np.float64
    assert pursuit(X.astype(np.float16), _DICTIONARY, n_nonzero_coefs=2).dtype == np.float64


# -- metrics -------------------------------------------------------------------------------
_METRIC_CASES = ["nan", "inf", "no samples", "no features", "1-D", "3-D", "strings", "complex"]


@pytest.mark.parametrize("case", _METRIC_CASES + ["sparse csr"])
def test_dense_metrics_reject_bad_input(case):
    bad, error, message = BAD_X[case]
    X = _data()
    with pytest.raises(error, match=message):
        metrics.explained_variance(bad, X)
    with pytest.raises(error, match=message):
        metrics.explained_variance(X, bad)
    for geometry in (metrics.mutual_coherence, lambda D: metrics.babel(D, 1)):
        with pytest.raises(error, match=message):
            geometry(bad)
    with pytest.raises(error, match=message):
        metrics.feature_recovery(bad, _DICTIONARY)
    with pytest.raises(error, match=message):
        metrics.feature_recovery(_DICTIONARY, bad)


@pytest.mark.parametrize("case", _METRIC_CASES)
def test_code_metrics_reject_bad_input(case):
    bad, error, message = BAD_X[case]
    if case == "strings":
        message = "not compatible with arrays of bytes/strings"
    for metric in (metrics.l0, metrics.component_usage, metrics.dead_fraction):
        with pytest.raises(error, match=message):
            metric(bad)


def test_metric_shape_and_parameter_errors():
    X = _data()
    with pytest.raises(ValueError, match="same shape, got X \\(40, 6\\) and X_hat \\(40, 5\\)"):
        metrics.explained_variance(X, X[:, :5])
    with pytest.raises(ValueError, match="all-zero row"):
        metrics.mutual_coherence(np.vstack([_DICTIONARY, np.zeros(N_FEATURES)]))
    for p in (N_COMPONENTS, N_COMPONENTS + 5):
        with pytest.raises(ValueError, match="p must be between 1 and n_components - 1 = 7"):
            metrics.babel(_DICTIONARY, p)
    for p in (0, -1):
        with pytest.raises(ValueError, match=r"'p' parameter of babel .* range \[1, inf\)"):
            metrics.babel(_DICTIONARY, p)
    for p in (2.5, "3", True):
        with pytest.raises(TypeError, match="'p' parameter of babel must be an int"):
            metrics.babel(_DICTIONARY, p)
    with pytest.raises(ValueError, match="same number of columns"):
        metrics.feature_recovery(_DICTIONARY[:, :5], _DICTIONARY)
    needs = "'estimator' parameter of {} must be an object implementing 'transform'{}"
    with pytest.raises(TypeError, match=needs.format("explained_variance_scorer", " and 'inv")):
        metrics.explained_variance_scorer(object(), X)
    with pytest.raises(TypeError, match=needs.format("neg_l0_scorer", r"\. Got <object")):
        metrics.neg_l0_scorer(object(), X)
    # Sparse codes are fine for the code metrics.
    codes = sp.csr_matrix(np.array([[0.0, 1.0], [2.0, 0.0]]))
    assert metrics.l0(codes) == 1.0
    assert metrics.dead_fraction(codes) == 0.0


# -- command line ----------------------------------------------------------------------------
def test_cli_reports_bad_data_in_one_line(tmp_path, capsys):
    cli = pytest.importorskip("skmpsae.cli")
    X = _data(100, 10)
    files = {
        "nan": (_with(X, 3, 4, np.nan), "contains NaN"),
        "inf": (_with(X, 3, 4, np.inf), "contains infinity"),
        "complex": (X.astype(np.complex64), "expected real numbers, got dtype complex64"),
        "one_d": (X[0], "expected a 2-D array"),
        "empty": (np.zeros((0, 10), np.float32), "the array is empty"),
    }
    for name, (array, _) in files.items():
        np.save(tmp_path / f"{name}.npy", array)
    np.save(tmp_path / "good.npy", X)
    model = tmp_path / "m.joblib"
    fit = ["fit", "--n-components", "8", "--k", "2", "--max-iter", "2", "--device", "cpu"]

    # One real process: exit status 1, one line on stderr, no traceback.
    done = subprocess.run(
        [sys.executable, "-m", "skmpsae", *fit, str(tmp_path / "nan.npy"), "-q", "-o", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "contains NaN" in done.stderr and "Traceback" not in done.stderr
    assert not model.exists()
    for name, (_, message) in files.items():
        assert cli.main([*fit, str(tmp_path / f"{name}.npy"), "-q", "-o", str(model)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
    # A diverging fit names the learning rate and writes no model.
    argv = [*fit, str(tmp_path / "good.npy"), "--learning-rate", "1e6", "-q", "-o", str(model)]
    assert cli.main(argv) == 1
    assert "learning_rate (1e+06)" in capsys.readouterr().err
    assert not model.exists()
