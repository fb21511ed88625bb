"""Training machinery under the estimators: the torch module base, the per-fit state that
``partial_fit`` carries between calls, the learning-rate schedule and the numerics of scaling.
"""

from abc import abstractmethod

import numpy as np
import torch

# Loss is measured relative to the data variance (about 1 - R2), so a reconstruction this much
# worse than predicting the mean can only come from a run-away optimisation.
_DIVERGED_LOSS = 1e4

class DivergenceError(FloatingPointError):
    """Raised when training produces non-finite or exploding losses.

    The estimator keeps the state it had before the call (or stays unfitted).
    """


class _SAEModule(torch.nn.Module):
    """Parameters every SAE has: a unit-norm dictionary (decoder) and a pre-encoder bias."""

    def __init__(self, n_components, n_features, fit_intercept, dtype, device):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.dictionary = torch.nn.Parameter(torch.zeros(n_components, n_features, **kw))
        self.bias = torch.nn.Parameter(torch.zeros(n_features, **kw), requires_grad=fit_intercept)

    @abstractmethod
    def loss(self, x, trainer):
        """Return the scalar training loss on batch ``x`` and how many samples fired each atom."""

    @torch.no_grad()
    def project_gradients(self):
        # The step then only rotates each atom; renormalising afterwards corrects the curvature
        # instead of fighting a radial component of the gradient. Without no_grad, the product
        # with the (grad-requiring) dictionary records an autograd graph on .grad at every step,
        # which leaked ~1.7 MB per step (14 GB over a benchmark).
        grad = self.dictionary.grad
        if grad is not None:
            grad -= (grad * self.dictionary).sum(dim=1, keepdim=True) * self.dictionary.detach()

    @torch.no_grad()
    def normalize(self):
        norms = self.dictionary.norm(dim=1, keepdim=True)
        self.dictionary /= norms.clamp_min(torch.finfo(norms.dtype).tiny)


class _Trainer:
    """Transient training state: the module on its device, the optimiser and the counters that
    ``partial_fit`` carries from call to call. Never pickled."""

    def __init__(self, module, optimizer, scale, device, dtype, published):
        self.module = module
        self.optimizer = optimizer
        self.scale = scale
        self.device = device
        self.dtype = dtype
        self.published = published  # the components_ array this state was published as
        self.step = 0  # optimiser steps so far, across partial_fit calls
        self.total_steps = None  # planned steps of this fit, None for partial_fit
        self.dead_window = 1  # samples without firing after which an atom counts as dead
        self.samples_since_fired = torch.zeros(
            module.dictionary.shape[0], dtype=torch.long, device=device
        )


class _Schedule:
    """Linear warm-up, then constant (``partial_fit``) or with a linear decay to zero over the
    last 20% of steps (``fit``, where the number of steps is known)."""

    def __init__(self, learning_rate, n_steps):
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.warmup = 50 if n_steps is None else max(1, min(100, n_steps // 20))

    def __call__(self, step):
        lr = self.learning_rate * min(1.0, (step + 1) / self.warmup)
        if self.n_steps is not None:
            decay_start = 0.8 * self.n_steps
            if step >= decay_start:
                lr *= max(0.0, (self.n_steps - step) / (self.n_steps - decay_start))
        return lr


def _as_tensor(array, dtype, device):
    """A tensor on ``device`` from a numpy array; read-only inputs (memmaps) are copied first,
    as torch cannot wrap them."""
    array = np.asarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype).to(device)


def _n_batches(n_samples, batch_size):
    return -(-n_samples // batch_size)


def _torch_dtype(np_dtype):
    return torch.float32 if np.dtype(np_dtype) == np.float32 else torch.float64


def _sample_rows(X, rng, max_rows):
    if X.shape[0] <= max_rows:
        return np.asarray(X)
    return np.asarray(X[np.sort(rng.choice(X.shape[0], max_rows, replace=False))])


def _peak_exponent(*arrays):
    """Exponent ``e`` with ``max|arrays| / 2**e`` in [0.5, 1) (0 for all-zero input).

    Sums of squares are taken on data divided by ``2**e``: the division is exact, and squares
    of values near 1e300 (or 1e-170) then neither overflow nor underflow.
    """
    peak = max(float(np.max(np.abs(a), initial=0.0)) for a in arrays)
    return int(np.frexp(peak)[1]) if peak > 0 else 0


def _rms_scale(X, chunk_rows=1024):
    """RMS deviation from the per-feature mean, in float64; for constant data the RMS of
    ``X`` itself, and 1.0 for all-zero data.

    Works over row chunks, so a wide sample never exists as a whole in float64 (16,384 rows of
    4,096 features would take 1.3 GB of temporaries at once).
    """
    X = np.asarray(X)
    exponent = _peak_exponent(X)

    def chunks():
        for start in range(0, X.shape[0], chunk_rows):
            yield np.ldexp(X[start : start + chunk_rows].astype(np.float64), -exponent)

    mean = sum(chunk.sum(axis=0) for chunk in chunks()) / X.shape[0]
    scale = float(np.sqrt(sum(float(((c - mean) ** 2).sum()) for c in chunks()) / X.size))
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.sqrt(sum(float((c**2).sum()) for c in chunks()) / X.size))
    return float(np.ldexp(scale, exponent)) or 1.0
