"""Property-based tests (hypothesis) of the pursuit invariants.

- the residual norm never grows with more steps (matching pursuit and OMP, functions and the
  fitted MatchingPursuitSAE);
- a code has at most k non-zeros;
- exact reconstruction in k steps when X combines k mutually orthogonal atoms (MP) or k linearly
  independent atoms (OMP);
- dtype (float32 / float64) and shape are preserved.
"""

import functools

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from skmpsae import MatchingPursuitSAE, TopKSAE, matching_pursuit, orthogonal_matching_pursuit

PURSUITS = {"mp": matching_pursuit, "omp": orthogonal_matching_pursuit}
settings.register_profile("skmpsae-properties", max_examples=30, deadline=None)
properties = settings.get_profile("skmpsae-properties")

dtypes = st.sampled_from([np.float32, np.float64])


@st.composite
def signals_and_dictionary(draw):
    """Small X and dictionary with arbitrary (bounded) entries: zeros, repeats and sign
    patterns included, so that ties and degenerate atoms get exercised."""
    dtype = draw(dtypes)
    n_samples = draw(st.integers(1, 6))
    n_features = draw(st.integers(1, 8))
    n_components = draw(st.integers(1, 12))
    elements = st.floats(-100, 100, width=32, allow_subnormal=False)
    X = draw(hnp.arrays(dtype, (n_samples, n_features), elements=elements))
    dictionary = draw(hnp.arrays(dtype, (n_components, n_features), elements=elements))
    return X, dictionary


def _residual_norms(X, codes, dictionary):
    X, codes, dictionary = (np.asarray(a, dtype=np.float64) for a in (X, codes, dictionary))
    return np.linalg.norm(X - codes @ dictionary, axis=1)


def _slack(X):
    # float32 codes are computed by a Gram recurrence: allow its rounding, nothing more.
    eps = np.finfo(X.dtype).eps
    return 50 * eps * (np.linalg.norm(np.asarray(X, np.float64), axis=1) + 1.0)


@properties
@given(signals_and_dictionary(), st.sampled_from(list(PURSUITS)), st.booleans())
def test_residual_never_grows_and_at_most_k_nonzeros(data, algorithm, positive):
    X, dictionary = data
    pursuit = PURSUITS[algorithm]
    previous = np.linalg.norm(np.asarray(X, dtype=np.float64), axis=1)
    for k in range(1, 7):
        codes = pursuit(X, dictionary, n_nonzero_coefs=k, positive=positive)
        assert codes.shape == (X.shape[0], dictionary.shape[0])
        assert codes.dtype == X.dtype
        assert np.isfinite(codes).all()
        assert ((codes != 0).sum(axis=1) <= k).all()
        if positive and algorithm == "mp":
            assert (codes >= 0).all()
        residual = _residual_norms(X, codes, dictionary)
        assert (residual <= previous + _slack(X)).all(), (k, residual, previous)
        previous = residual


@st.composite
def orthogonal_problem(draw):
    """Mutually orthogonal atoms (any norms) and X combining k of them."""
    dtype = draw(dtypes)
    seed = draw(st.integers(0, 2**31 - 1))
    n_features = draw(st.integers(1, 10))
    n_components = draw(st.integers(1, n_features))
    k = draw(st.integers(1, n_components))
    positive = draw(st.booleans())
    rng = np.random.RandomState(seed)
    basis, _ = np.linalg.qr(rng.randn(n_features, n_features))
    norms = rng.uniform(0.2, 5.0, size=n_components)
    dictionary = basis[:n_components] * norms[:, None]
    support = rng.choice(n_components, k, replace=False)
    # Coefficients bounded away from 0 so that every support atom beats the others clearly.
    magnitudes = rng.uniform(0.5, 3.0, size=(3, k))
    signs = 1.0 if positive else rng.choice([-1.0, 1.0], size=(3, k))
    true_codes = np.zeros((3, n_components))
    true_codes[:, support] = signs * magnitudes
    X = true_codes @ dictionary
    return X.astype(dtype), dictionary.astype(dtype), true_codes, k, positive


@properties
@given(orthogonal_problem())
def test_mp_exact_on_k_orthogonal_atoms(problem):
    X, dictionary, true_codes, k, positive = problem
    codes = matching_pursuit(X, dictionary, n_nonzero_coefs=k, positive=positive)
    rtol = 1e-4 if X.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(codes, true_codes, rtol=rtol, atol=rtol * np.abs(true_codes).max())
    residual = _residual_norms(X, codes, dictionary)
    assert (residual <= rtol * 10 * np.linalg.norm(X.astype(np.float64), axis=1)).all()


@st.composite
def independent_problem(draw):
    """k linearly independent, generally non-orthogonal atoms and X combining all of them."""
    dtype = draw(dtypes)
    seed = draw(st.integers(0, 2**31 - 1))
    n_features = draw(st.integers(1, 10))
    k = draw(st.integers(1, n_features))
    rng = np.random.RandomState(seed)
    # Correlated atoms: a shared direction plus noise, so that plain MP would not be exact.
    shared = rng.randn(n_features)
    dictionary = 0.8 * shared + rng.randn(k, n_features) * rng.uniform(0.3, 1.0)
    singular = np.linalg.svd(dictionary, compute_uv=False)
    assume(singular[-1] > 0.05 * singular[0])
    true_codes = rng.uniform(0.5, 3.0, size=(4, k)) * rng.choice([-1.0, 1.0], size=(4, k))
    X = true_codes @ dictionary
    return X.astype(dtype), dictionary.astype(dtype), true_codes, k


@properties
@given(independent_problem())
def test_omp_exact_on_k_independent_atoms(problem):
    X, dictionary, true_codes, k = problem
    codes = orthogonal_matching_pursuit(X, dictionary, n_nonzero_coefs=k)
    assert codes.dtype == X.dtype and codes.shape == true_codes.shape
    rtol = 2e-3 if X.dtype == np.float32 else 1e-8
    np.testing.assert_allclose(codes, true_codes, rtol=rtol, atol=rtol * np.abs(true_codes).max())
    residual = _residual_norms(X, codes, dictionary)
    assert (residual <= rtol * np.linalg.norm(X.astype(np.float64), axis=1)).all()


# -- the fitted estimators -----------------------------------------------------------------
@functools.cache
def _fitted(kind, dtype):
    rng = np.random.RandomState(0)
    X = (rng.rand(200, 3) @ rng.randn(3, 8) + 0.1 * rng.randn(200, 8)).astype(dtype)
    estimator = MatchingPursuitSAE if kind == "mp" else TopKSAE
    return estimator(
        n_components=24,
        n_nonzero_coefs=4,
        max_iter=3,
        batch_size=100,
        random_state=0,
        device="cpu",
    ).fit(X)


@properties
@given(
    dtypes,
    st.sampled_from(["mp", "omp"]),
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 5), st.just(8)),
        elements=st.floats(-10, 10, allow_subnormal=False),
    ),
)
def test_mp_sae_residual_never_grows_with_transform_steps(dtype, algorithm, X):
    sae = _fitted("mp", dtype)
    X = X.astype(dtype)
    previous = np.linalg.norm(X.astype(np.float64) - sae.intercept_, axis=1)
    for k in (1, 2, 4, 8, 16):
        sae.set_params(transform_algorithm=algorithm, transform_n_nonzero_coefs=k)
        codes = sae.transform(X)
        assert codes.dtype == dtype and codes.shape == (X.shape[0], 24)
        assert ((codes != 0).sum(axis=1) <= k).all()
        reconstruction = sae.inverse_transform(codes)
        assert reconstruction.dtype == dtype and reconstruction.shape == X.shape
        residual = np.linalg.norm(X.astype(np.float64) - reconstruction, axis=1)
        assert (residual <= previous + _slack(X) * 10).all(), (k, residual, previous)
        previous = residual
    sae.set_params(transform_algorithm="mp", transform_n_nonzero_coefs=None)


@properties
@given(dtypes, st.integers(1, 30), st.integers(1, 5))
def test_topk_sae_codes_have_at_most_k_nonzeros(dtype, k, n_samples):
    sae = _fitted("topk", dtype)
    X = np.random.RandomState(k).randn(n_samples, 8).astype(dtype)
    if k > 24:  # more latents than the encoder has: every latent is kept, with a warning
        with pytest.warns(UserWarning, match="larger than n_components=24"):
            codes = sae.set_params(transform_n_nonzero_coefs=k).transform(X)
        every = sae.set_params(transform_n_nonzero_coefs=24).transform(X)
        np.testing.assert_array_equal(codes, every)
        sae.set_params(transform_n_nonzero_coefs=None)
        return
    codes = sae.set_params(transform_n_nonzero_coefs=k).transform(X)
    assert codes.dtype == dtype and codes.shape == (n_samples, 24)
    assert ((codes != 0).sum(axis=1) <= k).all() and (codes >= 0).all()
    sae.set_params(transform_n_nonzero_coefs=None)
