"""Odd but valid data, numerical faults, reproducibility, thread safety and Ctrl-C.

Every fit here is a few epochs on at most a few hundred samples of 10 features, so the whole
file runs in well under a minute on two cores.
"""

import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from _helpers import ESTIMATORS, estimator_factory, low_rank_data, new_trainer
from skmpsae import DivergenceError

_make_small = estimator_factory(
    n_components=16, max_iter=4, batch_size=64, random_state=0, device="cpu", n_nonzero_coefs=3
)


def make_estimator(name, **params):
    # ReLU's default L1 weight is tuned for MNIST; 0.1 keeps these tiny fits from going silent.
    if name == "relu":
        params = {"alpha": 0.1, **params}
    return _make_small(name, **params)


def fitted_arrays(sae):
    names = ["components_", "intercept_", "encoder_weights_", "encoder_intercept_"]
    return {name: getattr(sae, name) for name in names if hasattr(sae, name)}


# -- odd but valid data --------------------------------------------------------------------
def _odd_inputs():
    X = low_rank_data()
    constant_column = X.copy()
    constant_column[:, 4] = 7.0
    return {
        # case: (data, dtype of the fitted arrays and of transform's output)
        "float16": (X.astype(np.float16), np.float64),
        "integers": ((X * 10).astype(np.int64), np.float64),
        "uint8": (np.clip(X * 60 + 100, 0, 255).astype(np.uint8), np.float64),
        "python lists": (X.astype(np.float64).tolist(), np.float64),
        "1 sample": (X[:1], np.float32),
        "2 samples": (X[:2], np.float32),
        "fewer than batch_size": (X[:40], np.float32),
        "all zeros": (np.zeros((50, 10)), np.float64),
        "constant column": (constant_column, np.float32),
        "identical rows": (np.tile(X[:1], (50, 1)), np.float32),
        "one feature": (X[:, :1], np.float32),
    }


ODD_INPUTS = _odd_inputs()


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("case", list(ODD_INPUTS))
def test_odd_but_valid_data_gives_finite_results(estimator, case):
    X, dtype = ODD_INPUTS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, no divide-by-zero, nothing
        sae = make_estimator(estimator).fit(X)
        codes = sae.transform(X)
        reconstruction = sae.inverse_transform(codes)
        score = sae.score(X)
    n_samples, n_features = np.asarray(X).shape
    assert codes.shape == (n_samples, 16) and codes.dtype == dtype
    assert reconstruction.shape == (n_samples, n_features) and reconstruction.dtype == dtype
    for name, array in fitted_arrays(sae).items():
        assert array.dtype == dtype, name
        assert np.isfinite(array).all(), name
    assert np.isfinite(codes).all() and np.isfinite(reconstruction).all()
    assert np.isfinite(score) and np.isfinite(sae.loss_curve_).all()
    assert sae.n_iter_ == 4 and 0 <= sae.n_dead_components_ <= 16
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1.0, rtol=1e-3)
    if case in ("all zeros", "identical rows"):
        # Nothing varies: the intercept alone reconstructs the data, up to the jitter of
        # Adam steps of ~learning_rate (relative to the data's RMS) on near-zero gradients.
        X = np.asarray(X, dtype=np.float64)
        jitter = max(1e-2, sae._learning_rate())
        assert np.abs(reconstruction - X).max() <= jitter * max(1.0, np.abs(X).max())


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_scale_aware_numerics(estimator):
    """The estimators train on X / RMS deviation: a rescaled or shifted data set must give
    (nearly) the same R2 as the unit-scale one in the same dtype, from 1e-300 to 1e300."""
    X = low_rank_data(dtype=np.float64)
    cases = {
        "x 1e6, float32": (X * 1e6).astype(np.float32),
        "x 1e-6, float32": (X * 1e-6).astype(np.float32),
        "around 1e6": X + 1e6,
        "x 1e300": X * 1e300,
        "x 1e-170": X * 1e-170,
    }
    reference = {
        dtype: make_estimator(estimator).fit(X.astype(dtype)).score(X.astype(dtype))
        for dtype in (np.float32, np.float64)
    }
    differences = {}
    for case, data in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow or underflow anywhere
            sae = make_estimator(estimator).fit(data)
            differences[case] = sae.score(data) - reference[data.dtype.type]
        assert np.isfinite(sae.transform(data)).all(), case
    # Only rounding separates these runs; 1e6 + X keeps 10 significant digits of X.
    assert max(map(abs, differences.values())) < 0.01, (reference, differences)


@pytest.mark.parametrize("estimator", ["mp", "batchtopk"])
def test_a_huge_row_is_named_and_does_not_set_the_scale(estimator):
    X = low_rank_data(dtype=np.float64)
    huge = X.copy()
    huge[17] = 1e30  # one corrupt row among unit-scale data
    sae = make_estimator(estimator)
    # Its squared error alone is ~1e60 times the rest: training cannot go on, and the error
    # after the warning says why.
    with pytest.warns(UserWarning, match=r"rows 17 of X lie over 1000 times farther .*e\+30 times"):
        with pytest.raises(DivergenceError, match="outliers"):
            sae.fit(huge)
    assert not hasattr(sae, "components_")
    # Large but finite rows: named, and the data scale (hence what the learning rate means) is
    # the one of the other rows, as without them.
    big = X.copy()
    big[[3, 50]] *= 3e3
    sae = make_estimator(estimator)
    with pytest.warns(UserWarning, match="rows 3, 50 of X"):
        scale = new_trainer(sae, big, n_steps=None).scale
    assert scale == pytest.approx(
        new_trainer(sae, np.delete(X, [3, 50], axis=0), n_steps=None).scale
    )
    # Ordinary spread, a 100x row included, warns of nothing.
    ordinary = X.copy()
    ordinary[5] *= 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_estimator(estimator, max_iter=1).fit(ordinary)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float64_end_to_end_and_float32_preserved(estimator):
    for dtype in (np.float64, np.float32):
        X = low_rank_data(dtype=dtype)
        sae = make_estimator(estimator, max_iter=2).fit(X)
        for name, array in fitted_arrays(sae).items():
            assert array.dtype == dtype, name
        codes = sae.transform(X)
        assert codes.dtype == dtype
        assert sae.inverse_transform(codes).dtype == dtype
        assert sae.fit_transform(X).dtype == dtype


# -- numerical faults ----------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_divergence_raises_and_leaves_estimator_unfitted(estimator):
    sae = make_estimator(estimator, learning_rate=1e6)
    with pytest.raises(DivergenceError, match=r"diverged .* learning_rate \(1e\+06\)"):
        sae.fit(low_rank_data(64))
    assert issubclass(DivergenceError, FloatingPointError)
    assert not [name for name in vars(sae) if name.endswith("_")]
    with pytest.raises(NotFittedError):
        sae.transform(low_rank_data(5))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_divergence_of_fitted_model_keeps_previous_state(estimator):
    X = low_rank_data(64)
    sae = make_estimator(estimator, max_iter=2).fit(X)
    arrays, n_iter, curve = fitted_arrays(sae), sae.n_iter_, list(sae.loss_curve_)
    copies = {name: array.copy() for name, array in arrays.items()}
    expected_codes = sae.transform(X)
    sae.set_params(learning_rate=1e6)
    for method in (sae.partial_fit, sae.fit):
        with pytest.raises(DivergenceError, match=r"learning_rate \(1e\+06\)"):
            method(X)
        for name, array in fitted_arrays(sae).items():
            assert array is arrays[name], name  # the very same arrays, untouched
            np.testing.assert_array_equal(array, copies[name])
        assert sae.n_iter_ == n_iter and sae.loss_curve_ == curve
        np.testing.assert_array_equal(sae.transform(X), expected_codes)
    # Training resumes normally from the kept state.
    sae.set_params(learning_rate=1e-3).partial_fit(X)
    assert sae.n_iter_ == n_iter + 1 and np.isfinite(sae.components_).all()


def test_dead_atoms_are_counted(capsys):
    # Three distinct samples and one step each: at most 3 of 64 atoms can fire in an epoch
    # (one batch per epoch).
    X = np.repeat(low_rank_data(3), 20, axis=0)
    for estimator in ("mp", "topk"):
        sae = make_estimator(estimator, n_components=64, n_nonzero_coefs=1, batch_size=60)
        sae.set_params(max_iter=2, verbose=1).fit(X)
        assert 61 <= sae.n_dead_components_ <= 64
        assert f"dead atoms {sae.n_dead_components_}/64" in capsys.readouterr().out
    # On all-zero data no latent can fire.
    for estimator in ESTIMATORS:
        sae = make_estimator(estimator, max_iter=2).fit(np.zeros((30, 10)))
        assert sae.n_dead_components_ == 16
    # Varied data keeps most atoms alive.
    assert make_estimator("mp").fit(low_rank_data()).n_dead_components_ < 16


# -- reproducibility -----------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_same_seed_gives_bit_identical_models(estimator):
    X = low_rank_data()
    first, second = (make_estimator(estimator, random_state=7).fit(X) for _ in range(2))
    for name, array in fitted_arrays(first).items():
        np.testing.assert_array_equal(array, getattr(second, name), err_msg=name)
    assert first.loss_curve_ == second.loss_curve_
    np.testing.assert_array_equal(first.transform(X), second.transform(X))
    other = make_estimator(estimator, random_state=8).fit(X)
    assert not np.array_equal(first.components_, other.components_)
    # partial_fit sequences are reproducible too.
    a, b = (make_estimator(estimator, random_state=3) for _ in range(2))
    for sae in (a, b):
        sae.partial_fit(X[:60]).partial_fit(X[60:])
    np.testing.assert_array_equal(a.components_, b.components_)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("random_state", [0, None])
def test_fit_leaves_global_rng_and_threads_alone(estimator, random_state):
    X = low_rank_data(64)
    torch_state = torch.get_rng_state()
    n_threads = torch.get_num_threads()
    numpy_state = np.random.get_state()[1].copy()
    sae = make_estimator(estimator, max_iter=2, random_state=random_state).fit(X)
    sae.partial_fit(X)
    sae.transform(X)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.get_num_threads() == n_threads
    if random_state is not None:
        np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


@pytest.mark.parametrize("estimator", ESTIMATORS + ["mp-omp"])
def test_transform_is_thread_safe(estimator):
    """Concurrent transforms, half float32 and half float64 on a cold parameter cache,
    give exactly the serial results. A tiny switch interval makes the interpreter swap
    threads often enough to hit a cache race if there is one."""
    name, _, algorithm = estimator.partition("-")
    params = {"transform_algorithm": algorithm} if algorithm else {}
    X32 = low_rank_data(200)
    sae = make_estimator(name, max_iter=1, **params).fit(X32)
    inputs = [X32 if i % 2 else X32.astype(np.float64) for i in range(8)]
    expected = {np.dtype(x.dtype): sae.transform(x) for x in inputs[:2]}
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(60):
                sae._tensor_cache.clear()  # cold cache: every thread races to fill it
                results = list(pool.map(sae.transform, inputs))
                for x, codes in zip(inputs, results, strict=True):
                    assert codes.dtype == x.dtype
                    np.testing.assert_array_equal(codes, expected[np.dtype(x.dtype)])
    finally:
        sys.setswitchinterval(switch_interval)


# -- interruption (Ctrl-C) -----------------------------------------------------------------
class _Interrupter:
    """Wraps the training loss of the modules ``sae`` builds: records the dictionary seen by
    each training step and raises KeyboardInterrupt, as Ctrl-C would, in step number ``at``."""

    def __init__(self, sae):
        self.calls = 0
        self.at = None
        self.seen = []
        make_module = sae._make_module

        def make_and_wrap(*args, **kwargs):
            module = make_module(*args, **kwargs)
            loss = module.loss

            def loss_or_interrupt(x, *inputs):
                if not torch.is_grad_enabled():
                    return loss(x, *inputs)  # a check of the loss, not a training step
                self.calls += 1
                self.seen.append(module.dictionary.detach().cpu().numpy().copy())
                if self.calls == self.at:
                    raise KeyboardInterrupt
                return loss(x, *inputs)

            module.loss = loss_or_interrupt
            return module

        sae._make_module = make_and_wrap


BATCHES_PER_EPOCH = 4  # 64 samples, batch_size 16


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_interrupt_keeps_last_completed_epoch(estimator):
    X = low_rank_data(64)
    sae = make_estimator(estimator, max_iter=6, batch_size=16)
    interrupter = _Interrupter(sae)
    interrupter.at = 2 * BATCHES_PER_EPOCH + 2  # second batch of epoch 3
    with pytest.warns(UserWarning, match="Training interrupted.*last completed epoch"):
        sae.fit(X)
    assert sae.n_iter_ == 2 and len(sae.loss_curve_) == 2
    assert sae.n_steps_ == 2 * BATCHES_PER_EPOCH  # the interrupted epoch's steps are discarded
    # The model is the one at the end of epoch 2, not the half-trained one of epoch 3.
    after_epoch_2 = interrupter.seen[2 * BATCHES_PER_EPOCH]
    np.testing.assert_array_equal(sae.components_, after_epoch_2)
    assert not np.array_equal(sae.components_, interrupter.seen[-1])
    codes = sae.transform(X)
    assert np.isfinite(codes).all() and np.isfinite(sae.score(X))
    # Ctrl-C during partial_fit of a fitted model keeps that model as it was.
    before = {name: array.copy() for name, array in fitted_arrays(sae).items()}
    interrupter.at = interrupter.calls + 2
    with pytest.warns(UserWarning, match="Training interrupted"):
        sae.partial_fit(X)
    for name, array in fitted_arrays(sae).items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)
    assert sae.n_iter_ == 2
    np.testing.assert_array_equal(sae.transform(X), codes)
    # And training can go on afterwards.
    sae.partial_fit(X)
    assert sae.n_iter_ == 3 and not np.array_equal(sae.components_, before["components_"])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_interrupt_before_first_epoch_reraises(estimator):
    X = low_rank_data(64)
    sae = make_estimator(estimator, batch_size=16)
    interrupter = _Interrupter(sae)
    interrupter.at = 2
    with pytest.raises(KeyboardInterrupt):
        sae.fit(X)
    assert not [name for name in vars(sae) if name.endswith("_")]
    with pytest.raises(NotFittedError):
        sae.transform(X)
    # On a fitted model, an interrupted refit puts the old model back.
    interrupter.at = None
    sae.fit(X)
    arrays = fitted_arrays(sae)
    interrupter.at = interrupter.calls + 2
    with pytest.raises(KeyboardInterrupt):
        sae.fit(X)
    for name, array in fitted_arrays(sae).items():
        assert array is arrays[name], name
    assert sae.n_iter_ == 4
