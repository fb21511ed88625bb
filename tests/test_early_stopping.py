"""Early stopping: the rule (as scikit-learn's MLPRegressor applies it), the split, and the
estimators' behaviour with it."""

import numpy as np
import pytest

from skmpsae._train.early_stopping import _EarlyStopping, _RowSubset, _validation_split


def _mlp_rule(scores, n_iter_no_change, tol):
    """scikit-learn's MLP loop (``_update_no_improvement_count``), written out: the epoch at
    which it stops (1-based, None if never) and the best epoch."""
    best, count, best_epoch = -np.inf, 0, None
    for epoch, score in enumerate(scores, start=1):
        if score < best + tol:
            count += 1
        else:
            count = 0
        if score > best:
            best, best_epoch = score, epoch
        if count >= n_iter_no_change:
            return epoch, best_epoch
    return None, best_epoch


@pytest.mark.parametrize("seed", range(20))
def test_rule_matches_mlp_regressor(seed):
    rng = np.random.RandomState(seed)
    # Rising, noisy scores that flatten out, so that both outcomes occur.
    scores = 1 - np.exp(-np.arange(1, 41) / rng.uniform(2, 15)) + rng.normal(0, 3e-4, 40)
    n_iter_no_change, tol = rng.randint(1, 6), rng.choice([0.0, 1e-4, 1e-3])
    stop = _EarlyStopping(n_iter_no_change, tol)
    stopped_at = None
    for epoch, score in enumerate(scores, start=1):
        if stop.update(score, lambda e=epoch: {"epoch": e}):
            stopped_at = epoch
            break
    expected_stop, expected_best = _mlp_rule(scores, n_iter_no_change, tol)
    assert stopped_at == expected_stop
    assert stop.best_epoch == expected_best
    assert stop.best_state == {"epoch": expected_best}  # the state of the best epoch is kept
    assert stop.best_score == scores[expected_best - 1]
    assert stop.scores == list(scores[: len(stop.scores)])


def test_validation_split_holds_out_a_random_fraction():
    X = np.arange(200, dtype=np.float64).reshape(100, 2)
    X_train, X_val = _validation_split(X, 0.1, 0)
    assert X_val.shape == (10, 2) and X_train.shape == (90, 2)
    # Disjoint, complete, each in the original order, and reproducible.
    rows = np.concatenate([X_train[:, 0], X_val[:, 0]]) // 2
    np.testing.assert_array_equal(np.sort(rows), np.arange(100))
    assert (np.diff(X_train[:, 0]) > 0).all() and (np.diff(X_val[:, 0]) > 0).all()
    np.testing.assert_array_equal(_validation_split(X, 0.1, 0)[1], X_val)
    assert not np.array_equal(_validation_split(X, 0.1, 1)[1], X_val)
    # At least one row each way.
    assert _validation_split(X[:3], 0.01, 0)[1].shape == (1, 2)
    with pytest.raises(ValueError, match="leaves none to train on"):
        _validation_split(X[:1], 0.1, 0)


def test_memmap_training_rows_are_read_on_demand(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(50, 3))
    X[:] = np.arange(150, dtype=np.float32).reshape(50, 3)
    X_train, X_val = _validation_split(X, 0.2, 0)
    assert isinstance(X_train, _RowSubset) and X_train.shape == (40, 3)
    dense = np.asarray(X_train)
    np.testing.assert_array_equal(X_train[np.array([0, 5, 39])], dense[[0, 5, 39]])
    assert not np.isin(dense[:, 0], X_val[:, 0]).any()


# -- the estimators ------------------------------------------------------------------------
from sklearn.datasets import load_digits  # noqa: E402

import skmpsae  # noqa: E402

ALL = [
    skmpsae.MatchingPursuitSAE,
    skmpsae.TopKSAE,
    skmpsae.BatchTopKSAE,
    skmpsae.MatryoshkaSAE,
    skmpsae.JumpReLUSAE,
    skmpsae.ReLUSAE,
]


@pytest.fixture(scope="module")
def digits():
    return (load_digits().data / 16.0).astype(np.float32)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_fit_stops_early_and_keeps_the_best_epoch(cls, digits):
    sae = cls(
        n_components=32,
        max_iter=60,
        batch_size=128,
        early_stopping=True,
        n_iter_no_change=2,
        tol=5e-3,
        random_state=0,
        device="cpu",
    ).fit(digits)
    scores = sae.validation_scores_
    assert len(scores) == sae.n_iter_ == len(sae.loss_curve_) < 60  # it stopped early
    assert sae.best_validation_score_ == max(scores)
    # The published model is the best epoch's: its held-out score is the best one recorded.
    _, X_validation = _validation_split(digits, 0.1, 0)
    assert sae.score(X_validation) == pytest.approx(sae.best_validation_score_, abs=1e-5)
    # Stopped by the rule: the last n_iter_no_change epochs did not beat the best before by tol.
    assert all(scores[i] < max(scores[:i]) + 5e-3 for i in (-2, -1))


def test_without_early_stopping_there_is_no_validation(digits):
    sae = skmpsae.MatchingPursuitSAE(n_components=16, max_iter=3, random_state=0, device="cpu").fit(
        digits
    )
    assert sae.validation_scores_ is None and sae.best_validation_score_ is None
    assert sae.n_iter_ == 3
    # partial_fit trains on everything it is given, as MLPRegressor's does.
    sae.set_params(early_stopping=True).partial_fit(digits)
    assert sae.n_iter_ == 4 and sae.validation_scores_ is None
