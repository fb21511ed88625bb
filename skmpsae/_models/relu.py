"""ReLU SAE: the classic one-layer sparse autoencoder with an L1 penalty."""

from numbers import Real

import torch.nn.functional as F

from .._compat import Interval
from .._train.contracts import LossOutput
from .base import _BaseSAE
from .module import _ENCODER_PUBLISHED_PARAMS, _EncoderModule, pre_activations


def _relu_codes(x, weight, encoder_bias, bias):
    return F.relu(pre_activations(x, weight, encoder_bias, bias))


class _ReLUModule(_EncoderModule):
    """Loss on data scaled to unit RMS: ``(||x - x_hat||^2 + alpha * sum_j z_j ||d_j||) / d``.

    The trainer warms the L1 weight up through ``sparsity_scale`` (the schedule's warm-up, the
    same as the learning rate's): a full penalty on a random start kills latents before they
    find data.
    """

    def __init__(self, n_components, n_features, alpha, fit_intercept, dtype, device):
        super().__init__(n_components, n_features, fit_intercept, dtype, device)
        self.alpha = alpha

    def loss(self, x, dead_mask=None, sparsity_scale=1.0):
        """LossOutput on batch ``x`` with the L1 weight ``alpha * sparsity_scale``;
        ``dead_mask`` is unused."""
        z = _relu_codes(x, self.encoder_weight, self.encoder_bias, self.bias)
        x_hat = z @ self.dictionary + self.bias
        alpha = self.alpha * sparsity_scale
        sparsity = (z * self.dictionary.norm(dim=1)).sum(dim=1).mean()
        loss = (((x - x_hat) ** 2).sum(dim=1).mean() + alpha * sparsity) / x.shape[1]
        return LossOutput(loss, (z > 0).sum(dim=0))


class ReLUSAE(_BaseSAE):
    """Sparse autoencoder with a ReLU encoder and an L1 penalty on the codes.

    Codes are ``relu(W_enc (x - b) + b_enc)``, reconstructions ``codes @ components_ + b``,
    and the loss adds ``alpha`` times the L1 norm of the codes (weighted by the decoder norms,
    which are kept at one) to the squared error, on data scaled to unit RMS deviation, so that
    ``alpha`` means the same on any data scale. Sparsity (L0) is emergent: raise ``alpha`` for
    sparser codes.

    Parameters
    ----------
    n_components : int, default=256
        Number of latents (dictionary rows).
    alpha : float, default=4.0
        Strength of the L1 penalty, in units of the data's RMS deviation. The default gives an
        L0 near the k=16 of the other estimators on MNIST (256 latents).
        Measured in docs/benchmarks.md, "Where the defaults come from".
    max_iter : int, default=50
        Epochs in :meth:`fit`.
    batch_size : int, default=256
        Samples per Adam step.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate; "auto" is ``3e-3 * min(1, sqrt(256 / n_components))``.
        Linear warm-up over the first 5% of steps (at most 100; 50 for
        :meth:`partial_fit`), which ramps the L1 penalty up with it; linear decay to zero over
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
        Training loss per epoch (relative to the data variance).
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
    TopKSAE : Sets L0 directly.
    MatchingPursuitSAE : Residual-guided encoder for correlated features.
    sklearn.decomposition.DictionaryLearning : Sparse coding with an L1 penalty, solved exactly.

    References
    ----------
    .. [1] T. Bricken et al., "Towards Monosemanticity: Decomposing Language Models With
       Dictionary Learning", Transformer Circuits Thread, Anthropic, 2023.
    .. [2] Anthropic, "Circuits Updates - April 2024", Transformer Circuits Thread, 2024
       (the L1 penalty weighted by the decoder norms, used here).

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import ReLUSAE
    >>> X = np.random.RandomState(0).rand(200, 20).astype(np.float32)
    >>> sae = ReLUSAE(n_components=32, alpha=0.5, max_iter=5, random_state=0).fit(X)
    >>> sae.transform(X).shape
    (200, 32)
    """

    _parameter_constraints: dict = {
        **_BaseSAE._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
    }

    _published_params = {**_BaseSAE._published_params, **_ENCODER_PUBLISHED_PARAMS}

    def __init__(
        self,
        n_components=256,
        *,
        alpha=4.0,
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

    def _make_module(self, n_features, dtype, device):
        return _ReLUModule(
            self.n_components, n_features, self.alpha, self.fit_intercept, dtype, device
        )

    def _encode(self, X, params):
        return _relu_codes(
            X, params["encoder_weights_"], params["encoder_intercept_"], params["intercept_"]
        )
