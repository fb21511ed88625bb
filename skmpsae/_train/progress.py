"""Progress reporting: what a training ``callback`` receives after each epoch, the lines that
``verbose`` prints, and the command line's bar (tqdm, or plain lines without it)."""

import sys
from typing import Any, NamedTuple


class EpochInfo(NamedTuple):
    """What an estimator's ``callback`` receives after each completed epoch.

    Fitted attributes are published when the call returns, so during the call ``estimator``
    still holds the state it had before it; the numbers here are the live ones.

    Attributes
    ----------
    estimator : estimator instance
        The estimator being trained.
    epoch : int
        Epochs completed so far, across calls (what ``n_iter_`` will be).
    n_epochs : int
        Epochs this call runs (``max_iter`` for ``fit``, 1 for ``partial_fit``).
    n_steps : int
        Optimiser steps taken so far, across calls (what ``n_steps_`` will be).
    loss : float
        Mean training loss of the epoch, relative to the data variance.
    n_dead : int
        Latents that fired for no sample during the epoch.
    seconds : float
        Wall-clock time of the epoch.

    See Also
    --------
    sklearn.decomposition.MiniBatchDictionaryLearning : Takes a per-iteration callback too.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> X = np.random.RandomState(0).rand(100, 8).astype(np.float32)
    >>> seen = []
    >>> sae = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=2, max_iter=3,
    ...                          random_state=0, callback=seen.append).fit(X)
    >>> [info.epoch for info in seen], [info.loss for info in seen] == sae.loss_curve_
    ([1, 2, 3], True)
    """

    estimator: Any
    epoch: int
    n_epochs: int
    n_steps: int
    loss: float
    n_dead: int
    seconds: float


def epoch_reporter(estimator, n_epochs, verbose, callback, main_process=True):
    """``report(trainer, epoch_result)`` for :func:`~skmpsae._train.loop.train_epochs`: an
    :class:`EpochInfo` for ``estimator``'s ``callback``, and a line if ``verbose`` (on the
    main process only)."""

    def report(trainer, result):
        info = EpochInfo(estimator, trainer.epoch, n_epochs, trainer.step, *result)
        if verbose and main_process:
            print_epoch(info)
        if callback is not None:
            callback(info)

    return report


def describe_epoch(info):
    """``"loss 0.12345, dead atoms 2/256, 0.50s"`` for an :class:`EpochInfo`."""
    return (
        f"loss {info.loss:.5f}, dead atoms {info.n_dead}/{info.estimator.n_components}, "
        f"{info.seconds:.2f}s"
    )


def print_epoch(info):
    """What ``verbose=1`` prints after each epoch."""
    name = type(info.estimator).__name__
    print(f"[{name}] epoch {info.epoch}: {describe_epoch(info)}", flush=True)


class Progress:
    """A tqdm bar on stderr, or plain lines when tqdm is not installed."""

    def __init__(self, total, desc, unit, enabled):
        self.total, self.desc, self.unit, self.count = total, desc, unit, 0
        self.enabled = enabled
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True)

    def update(self, info=""):
        self.count += 1
        if self.bar is not None:
            if info:
                self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            suffix = f": {info}" if info else ""
            print(
                f"{self.desc} {self.unit} {self.count}/{self.total}{suffix}",
                file=sys.stderr,
                flush=True,
            )

    def close(self):
        if self.bar is not None:
            self.bar.close()
