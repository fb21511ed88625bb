"""JumpReLU SAE: per-latent thresholds trained through an L0 penalty with straight-through
estimators (Rajamanoharan et al., 2024; the architecture of Gemma Scope)."""

from numbers import Real

import torch

from .._compat import Interval
from .._train.contracts import LossOutput
from .base import _BaseSAE
from .module import _ENCODER_PUBLISHED_PARAMS, _EncoderModule, pre_activations

# Initial threshold, in units of the data's RMS deviation: low enough that about half the
# latents fire on the first batches (the encoder starts as the transposed dictionary), so that
# every latent receives gradients before the L0 penalty raises its threshold.
_THRESHOLD_INIT = 0.1


def _window(pre, threshold, bandwidth):
    """Rectangle kernel ``K((pre - threshold) / bandwidth)``: 1 inside the window of width
    ``bandwidth`` centred on the threshold, 0 outside."""
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype)


class _JumpReLU(torch.autograd.Function):
    """``pre * H(pre - threshold)``. The gradient to ``pre`` is the exact one, ``H``; to the
    threshold it is the straight-through pseudo-derivative ``-(threshold / bandwidth) K``."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad_output * (pre > threshold).to(pre.dtype)
        window = _window(pre, threshold, ctx.bandwidth)
        grad_threshold = -(threshold / ctx.bandwidth) * window * grad_output
        return grad_pre, grad_threshold.sum(dim=0), None


class _Step(torch.autograd.Function):
    """``H(pre - threshold)``, for the L0 count. No gradient to ``pre``; to the threshold the
    pseudo-derivative ``-K / bandwidth``, the exact derivative of the step smoothed by a
    uniform kernel of width ``bandwidth``."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        pre, threshold = ctx.saved_tensors
        window = _window(pre, threshold, ctx.bandwidth)
        grad_threshold = -(window / ctx.bandwidth) * grad_output
        return None, grad_threshold.sum(dim=0), None


def _jumprelu_codes(x, weight, encoder_bias, bias, threshold):
    pre = pre_activations(x, weight, encoder_bias, bias)
    return pre * (pre > threshold).to(pre.dtype)


class _JumpReLUModule(_EncoderModule):
    """Loss on data scaled to unit RMS: ``||x - x_hat||^2 / d + alpha * ||z||_0``.

    The trainer warms the L0 weight up through ``sparsity_scale`` (the learning rate's
    warm-up), as Gemma Scope warms up its L0 coefficient: a full penalty on a random start
    raises thresholds before the latents have found the data.
    """

    def __init__(self, n_components, n_features, alpha, bandwidth, fit_intercept, dtype, device):
        super().__init__(n_components, n_features, fit_intercept, dtype, device)
        self.alpha = alpha
        self.bandwidth = bandwidth
        self.threshold = torch.nn.Parameter(
            torch.full((n_components,), _THRESHOLD_INIT, dtype=dtype, device=device)
        )

    @torch.no_grad()
    def initialize(self, bias, dictionary):
        super().initialize(bias, dictionary)
        self.threshold.fill_(_THRESHOLD_INIT)

    def loss(self, x, dead_mask=None, sparsity_scale=1.0):
        """LossOutput on batch ``x`` with the L0 weight ``alpha * sparsity_scale``;
        ``dead_mask`` is unused."""
        pre = pre_activations(x, self.encoder_weight, self.encoder_bias, self.bias)
        z = _JumpReLU.apply(pre, self.threshold, self.bandwidth)
        x_hat = z @ self.dictionary + self.bias
        l0 = _Step.apply(pre, self.threshold, self.bandwidth).sum(dim=1).mean()
        loss = ((x - x_hat) ** 2).sum(dim=1).mean() / x.shape[1] + self.alpha * sparsity_scale * l0
        return LossOutput(loss, (z > 0).sum(dim=0))

    @torch.no_grad()
    def normalize(self):
        super().normalize()
        # A negative threshold would let negative pre-activations through as negative codes.
        self.threshold.clamp_(min=0)


class JumpReLUSAE(_BaseSAE):
    """Sparse autoencoder with a JumpReLU encoder and an L0 penalty (Rajamanoharan et al., 2024).

    Codes are ``z_j = p_j * H(p_j - theta_j)`` with pre-activations
    ``p = W_enc (x - b) + b_enc``: each latent has its own threshold ``theta_j``, below which
    it is exactly zero and above which it passes its pre-activation unshrunk (an L1 penalty, as
    in :class:`ReLUSAE`, shrinks every code). The loss is the squared error relative to the
    data variance plus ``alpha`` times the number of active latents. The step function has no
    useful gradient, so the thresholds learn through straight-through estimators: the
    derivative of the step smoothed by a rectangle kernel of width ``bandwidth``. Sparsity (L0)
    is emergent: raise ``alpha`` for sparser codes.

    Parameters
    ----------
    n_components : int, default=256
        Number of latents (dictionary rows).
    alpha : float, default=4e-3
        Weight of the L0 penalty: the fraction of the data's variance a latent must explain to
        pay for firing. Warmed up with the learning rate. The default gives an L0 near 16 on
        MNIST (256 latents), as the other estimators' k=16.
        Measured in docs/benchmarks.md, "Where the defaults come from".
    bandwidth : float, default=0.5
        Width of the straight-through estimator's window around each threshold, in units of the
        data's RMS deviation (inputs are scaled by it, so it means the same on any scale).
        Measured in docs/benchmarks.md, "Where the defaults come from".
    max_iter : int, default=50
        Epochs in :meth:`fit`.
    batch_size : int, default=256
        Samples per Adam step.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate; "auto" is ``1e-2 * min(1, sqrt(256 / n_components))``. The
        thresholds learn at this rate from their initial 0.1. Linear warm-up over the first 5%
        of steps, linear decay to zero over the last 20% of a fit.
        Measured in docs/benchmarks.md, "Where the defaults come from".
    fit_intercept : bool, default=True
        Learn a pre-encoder/decoder bias ``b``, initialised to the data mean.
    dict_init : array-like of shape (n_components, n_features), default=None
        Initial dictionary (rows are normalised); None: random directions, with the encoder
        initialised as the transposed dictionary.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and shuffling, without touching torch's global RNG.
    device : str or torch.device, default="auto"
        "auto" (CUDA if available, else CPU), "cpu", "cuda", ...
    verbose : int, default=0
        Print the loss and the number of dead latents after each epoch.
    callback : callable, default=None
        Called after each completed epoch of :meth:`fit` and :meth:`partial_fit` with a
        :class:`~skmpsae.EpochInfo` named tuple (``estimator``, ``epoch``, ``n_epochs``,
        ``n_steps``, ``loss``, ``n_dead``, ``seconds``), as
        ``MiniBatchDictionaryLearning(callback=...)``.
        Fitted attributes are published when the call returns, so read the numbers from the
        tuple. Raising from it stops training as any error does (Ctrl-C keeps the last epoch).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data in :meth:`fit`, score it (R2, as
        :meth:`score`) after every epoch, stop once the score has not improved by more than
        ``tol`` for ``n_iter_no_change`` epochs, and keep the parameters of the best epoch
        (as ``MLPRegressor``). :meth:`partial_fit` ignores it.
    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping (at least one sample).
    n_iter_no_change : int, default=10
        Epochs without an improvement of more than ``tol`` after which early stopping ends
        training.
    tol : float, default=1e-4
        Improvement of the held-out R2 that counts for early stopping.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Decoder rows, unit norm.
    intercept_ : ndarray of shape (n_features,)
        The bias ``b``.
    encoder_weights_ : ndarray of shape (n_components, n_features)
        Encoder matrix ``W_enc``.
    encoder_intercept_ : ndarray of shape (n_components,)
        Encoder bias ``b_enc``, in the data's units.
    threshold_ : ndarray of shape (n_components,)
        Per-latent thresholds ``theta``, in the data's units, non-negative.
    n_iter_ : int
        Epochs run.
    n_steps_ : int
        Adam steps taken.
    loss_curve_ : list of float
        Training loss per epoch (relative error plus the weighted L0).
    n_dead_components_ : int
        Latents that fired for no sample during the last epoch.
    validation_scores_ : list of float or None
        Held-out R2 after each epoch of the last :meth:`fit` with ``early_stopping=True``;
        None otherwise.
    best_validation_score_ : float or None
        The best of ``validation_scores_`` (its epoch's parameters are the published ones);
        None without early stopping.
    n_features_in_ : int
        Number of features seen during :term:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`, if ``X`` had string column names.

    See Also
    --------
    ReLUSAE : ReLU encoder with an L1 penalty.
    BatchTopKSAE : Sets the mean L0 directly.

    References
    ----------
    S. Rajamanoharan, T. Lieberum, N. Sonnerat, A. Conmy, V. Varma, J. Kramar and N. Nanda,
    "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders",
    arXiv:2407.14435, 2024.

    T. Lieberum et al., "Gemma Scope: Open Sparse Autoencoders Everywhere All At Once on
    Gemma 2", arXiv:2408.05147, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import JumpReLUSAE
    >>> X = np.random.RandomState(0).rand(200, 20).astype(np.float32)
    >>> sae = JumpReLUSAE(n_components=32, max_iter=5, random_state=0).fit(X)
    >>> sae.transform(X).shape
    (200, 32)
    >>> sae.threshold_.shape
    (32,)
    """

    _parameter_constraints: dict = {
        **_BaseSAE._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "bandwidth": [Interval(Real, 0, None, closed="neither")],
    }

    _published_params = {
        **_BaseSAE._published_params,
        **_ENCODER_PUBLISHED_PARAMS,
        "threshold": ("threshold_", True),
    }

    def __init__(
        self,
        n_components=256,
        *,
        alpha=4e-3,
        bandwidth=0.5,
        max_iter=50,
        batch_size=256,
        learning_rate="auto",
        fit_intercept=True,
        dict_init=None,
        random_state=None,
        device="auto",
        verbose=0,
        callback=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.bandwidth = bandwidth
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.fit_intercept = fit_intercept
        self.dict_init = dict_init
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.callback = callback
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol

    _auto_learning_rate = 1e-2

    def _make_module(self, n_features, dtype, device):
        return _JumpReLUModule(
            self.n_components,
            n_features,
            self.alpha,
            self.bandwidth,
            self.fit_intercept,
            dtype,
            device,
        )

    def _encode(self, X, params):
        return _jumprelu_codes(
            X,
            params["encoder_weights_"],
            params["encoder_intercept_"],
            params["intercept_"],
            params["threshold_"],
        )
