"""Early stopping as scikit-learn's ``MLPRegressor`` does it: a held-out fraction of the training
data is scored after every epoch, training stops once the score has not improved by more than
``tol`` for ``n_iter_no_change`` epochs, and the best epoch's parameters are kept."""

import numpy as np
from sklearn.utils import check_random_state


class _EarlyStopping:
    """The stopping rule and the best epoch's state.

    Parameters
    ----------
    n_iter_no_change : int
        Epochs without an improvement of more than ``tol`` after which to stop.
    tol : float
        The improvement of the validation score (R2) that counts.
    """

    def __init__(self, n_iter_no_change, tol):
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.scores = []
        self.best_score = -np.inf
        self.best_epoch = None  # 1-based index into ``scores``
        self.best_state = None
        self._no_improvement = 0

    def update(self, score, state_fn) -> bool:
        """Record one epoch's validation ``score``; ``state_fn()`` gives the state to keep if it
        is the best so far. Returns True when training should stop."""
        self.scores.append(float(score))
        # As MLPRegressor: an epoch counts as an improvement only if it beats the best by tol.
        if score < self.best_score + self.tol:
            self._no_improvement += 1
        else:
            self._no_improvement = 0
        if score > self.best_score or self.best_state is None:
            self.best_score = float(score)
            self.best_epoch = len(self.scores)
            self.best_state = state_fn()
        return self._no_improvement >= self.n_iter_no_change


class _RowSubset:
    """Rows ``rows`` (sorted) of a memory-mapped array, read on demand: a training set that
    leaves the validation rows out without copying the rest into memory."""

    def __init__(self, X, rows):
        self.X = X
        self.rows = rows
        self.shape = (rows.size, *X.shape[1:])
        self.dtype = X.dtype
        self.ndim = X.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        return self.X[self.rows[key]]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.X[self.rows])
        return out if dtype is None else out.astype(dtype, copy=False)


def _validation_split(X, validation_fraction, random_state):
    """``(X_train, X_validation)``: a random ``validation_fraction`` of the rows (at least one)
    held out, both in their original order. The held-out rows are always copied into memory;
    the training rows are copied too unless ``X`` is a memory map."""
    n_samples = X.shape[0]
    n_validation = int(np.ceil(validation_fraction * n_samples))
    if n_samples - n_validation < 1:
        raise ValueError(
            f"early_stopping holds out validation_fraction={validation_fraction:g} of the "
            f"{n_samples} samples, which leaves none to train on; it needs at least 2 samples "
            "and a validation_fraction below 1 - 1/n_samples."
        )
    rng = check_random_state(random_state)
    held_out = np.zeros(n_samples, dtype=bool)
    held_out[rng.choice(n_samples, n_validation, replace=False)] = True
    train_rows, validation_rows = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    X_validation = np.asarray(X[validation_rows])
    if isinstance(X, np.memmap):
        return _RowSubset(X, train_rows), X_validation
    return np.asarray(X)[train_rows], X_validation
