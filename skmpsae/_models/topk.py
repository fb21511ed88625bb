"""TopK SAE: a one-layer encoder that keeps the k largest pre-activations (Gao et al., 2024)."""

import warnings
from numbers import Integral, Real

import torch.nn.functional as F

from .._compat import Interval
from .._pursuit.encode import _decode_selected, _scatter_codes
from .._train.contracts import LossOutput
from .._utils import NotBoolInterval
from .base import _BaseSAE
from .module import _ENCODER_PUBLISHED_PARAMS, _EncoderModule, auxk_term, pre_activations


def _topk_codes(x, weight, encoder_bias, bias, k):
    """Values (after ReLU) and indices of the k largest pre-activations of ``x``."""
    pre = pre_activations(x, weight, encoder_bias, bias)
    values, indices = pre.topk(k, dim=1)
    return F.relu(values), indices, pre


class _TopKModule(_EncoderModule):
    """Loss: squared reconstruction error + ``aux_coef`` times the AuxK loss
    (:func:`~skmpsae._models.module.auxk_term`)."""

    def __init__(self, n_components, n_features, k, fit_intercept, dtype, device, aux_coef=1 / 32):
        super().__init__(n_components, n_features, fit_intercept, dtype, device)
        self.k = k
        self.aux_coef = aux_coef

    def loss(self, x, dead_mask=None, sparsity_scale=1.0):
        """LossOutput on batch ``x``; ``dead_mask`` (bool, one per latent; None: no latent is
        dead) selects the latents the AuxK term revives. ``sparsity_scale`` is unused."""
        values, indices, pre = _topk_codes(
            x, self.encoder_weight, self.encoder_bias, self.bias, self.k
        )
        x_hat = _decode_selected(indices, values, self.dictionary) + self.bias
        loss = ((x - x_hat) ** 2).sum(dim=1).mean() / x.shape[1]
        loss = loss + auxk_term(x, x_hat, pre, dead_mask, self.dictionary, self.aux_coef)
        return LossOutput(loss, self.fired_counts(indices, values > 0))


class _KSparseSAE(_BaseSAE):
    """What the TopK family (TopKSAE, BatchTopKSAE, MatryoshkaSAE) shares: an encoder with a
    learned bias, ``n_nonzero_coefs`` latents kept in training (per sample or per batch on
    average), the AuxK loss and their parameters."""

    _parameter_constraints: dict = {
        **_BaseSAE._parameter_constraints,
        "n_nonzero_coefs": [NotBoolInterval(Integral, 1, None, closed="left")],
        "transform_n_nonzero_coefs": [NotBoolInterval(Integral, 1, None, closed="left"), None],
        "aux_coef": [Interval(Real, 0, None, closed="left")],
    }

    _published_params = {**_BaseSAE._published_params, **_ENCODER_PUBLISHED_PARAMS}

    def __init__(
        self,
        n_components=256,
        *,
        n_nonzero_coefs=16,
        transform_n_nonzero_coefs=None,
        aux_coef=1 / 32,
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
        self.n_nonzero_coefs = n_nonzero_coefs
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.aux_coef = aux_coef
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

    def _k(self, k, name):
        """``k`` latents to keep, at most ``n_components``: a larger k keeps every latent
        (the encoder is then a plain ReLU), with a warning naming both numbers."""
        if k > self.n_components:
            warnings.warn(
                f"{type(self).__name__}: {name}={k} is larger than n_components="
                f"{self.n_components}; every latent is kept (k={self.n_components}).",
                UserWarning,
                stacklevel=3,
            )
            return self.n_components
        return k


class TopKSAE(_KSparseSAE):
    """Sparse autoencoder with a TopK encoder (Makhzani & Frey, 2013; Gao et al., 2024).

    Codes are ``topk(relu(W_enc (x - b) + b_enc))``: only the ``n_nonzero_coefs`` largest
    pre-activations per sample survive. The decoder ``components_`` has unit-norm rows; the
    encoder starts as its transpose. Dead latents (silent for a whole epoch) are revived by the
    AuxK loss, which asks them to reconstruct the residual the live latents leave.

    Parameters
    ----------
    n_components : int, default=256
        Number of latents (dictionary rows).
    n_nonzero_coefs : int, default=16
        k, the number of latents kept per sample in training. A k of ``n_components`` or more
        keeps every latent (the encoder is then a plain ReLU); a larger k warns, naming both
        numbers, so that the defaults work at any ``n_components``.
    transform_n_nonzero_coefs : int, default=None
        k at inference (capped at ``n_components`` in the same way); None means
        ``n_nonzero_coefs``.
        Unlike matching pursuit, a TopK encoder is not trained for other values: past the
        number of latents with a positive pre-activation, a larger k changes nothing
        (docs/benchmarks.md, section 2).
    aux_coef : float, default=1/32
        Weight of the AuxK loss (0 disables it).
    max_iter : int, default=50
        Epochs in :meth:`fit`.
    batch_size : int, default=256
        Samples per Adam step.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate; "auto" is ``3e-3 * min(1, sqrt(256 / n_components))``.
        Linear warm-up over the first 5% of steps (at most 100), linear decay to zero over
        the last 20% of a fit.
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
    n_iter_ : int
        Epochs run.
    n_steps_ : int
        Adam steps taken.
    loss_curve_ : list of float
        Training loss per epoch (reconstruction error relative to the data variance, plus the
        weighted AuxK term).
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
    MatchingPursuitSAE : Residual-guided encoder for correlated features.
    ReLUSAE : ReLU encoder with an L1 penalty.

    References
    ----------
    .. [1] A. Makhzani and B. Frey, "k-Sparse Autoencoders", 2013, arXiv:1312.5663.
    .. [2] L. Gao et al., "Scaling and evaluating sparse autoencoders", 2024,
       arXiv:2406.04093 (TopK activation and the AuxK loss).

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import TopKSAE
    >>> X = np.random.RandomState(0).rand(200, 20).astype(np.float32)
    >>> sae = TopKSAE(n_components=32, n_nonzero_coefs=4, max_iter=5, random_state=0)
    >>> codes = sae.fit_transform(X)
    >>> bool((codes != 0).sum(axis=1).max() <= 4)
    True
    """

    def _make_module(self, n_features, dtype, device):
        return _TopKModule(
            self.n_components,
            n_features,
            self._k(self.n_nonzero_coefs, "n_nonzero_coefs"),
            self.fit_intercept,
            dtype,
            device,
            aux_coef=self.aux_coef,
        )

    def _encode(self, X, params):
        if self.transform_n_nonzero_coefs is None:
            k = self._k(self.n_nonzero_coefs, "n_nonzero_coefs")
        else:
            k = self._k(self.transform_n_nonzero_coefs, "transform_n_nonzero_coefs")
        values, indices, _ = _topk_codes(
            X, params["encoder_weights_"], params["encoder_intercept_"], params["intercept_"], k
        )
        return _scatter_codes(indices, values, self.n_components)
