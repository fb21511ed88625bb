"""BatchTopK SAE: TopK over a whole batch in training, a learned threshold at inference
(Bussmann, Leask & Nanda, 2024)."""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._pursuit.encode import _scatter_codes
from .._train.contracts import LossOutput
from .module import _EncoderModule, auxk_term, pre_activations
from .topk import _KSparseSAE, _topk_codes

# Weight of a new batch in the running estimate of the inference threshold: a time constant of
# 50 steps, short against a default fit (800 steps on 4,000 samples) and long against the batch
# to batch noise of the smallest kept activation.
_THRESHOLD_MOMENTUM = 0.02


def _batch_topk_kept(acts, k):
    """Flat positions, in row order, of the ``k * n_samples`` largest entries of ``acts``
    over the whole batch, those that are positive."""
    n_keep = min(k * acts.shape[0], acts.numel())
    flat = acts.flatten()
    kept = flat.topk(n_keep, sorted=False).indices.sort().values
    return kept[flat[kept] > 0]


def _threshold_codes(pre, threshold):
    """Inference codes: every ReLU activation above the learned threshold."""
    acts = F.relu(pre)
    return acts * (acts > threshold)


class _Kept(NamedTuple):
    """A batch's kept codes, flat in row order (what ``embedding_bag`` decodes)."""

    latents: torch.Tensor  # (n_kept,) long
    values: torch.Tensor  # (n_kept,): the activations, differentiable
    offsets: torch.Tensor  # (n_samples,) long: where each row's codes start


class _BatchTopKModule(_EncoderModule):
    """Loss: squared reconstruction error of the batch-level TopK codes, plus ``aux_coef``
    times the AuxK loss. Also tracks the inference threshold (a non-trained parameter, so that
    it is published and restored with the others)."""

    def __init__(self, n_components, n_features, k, fit_intercept, dtype, device, aux_coef):
        super().__init__(n_components, n_features, fit_intercept, dtype, device)
        self.k = k
        self.aux_coef = aux_coef
        # Negative until the first training batch sets it.
        self.threshold = torch.nn.Parameter(
            torch.full((), -1.0, dtype=dtype, device=device), requires_grad=False
        )

    @torch.no_grad()
    def initialize(self, bias, dictionary):
        super().initialize(bias, dictionary)
        self.threshold.fill_(-1.0)

    def loss(self, x, dead_mask=None, sparsity_scale=1.0):
        """LossOutput on batch ``x``; ``dead_mask`` (bool, one per latent; None: none is dead)
        selects the latents the AuxK term revives; ``sparsity_scale`` is unused. Under autograd
        (a training step, not the trainer's re-measurement) it also updates the threshold."""
        pre, kept = self.kept_codes(x)
        x_hat = self.decode_kept(kept) + self.bias
        loss = ((x - x_hat) ** 2).sum(dim=1).mean() / x.shape[1]
        loss = loss + self._aux_term(x, x_hat, pre, dead_mask)
        if torch.is_grad_enabled():
            self._update_threshold(kept.values.detach())
        return LossOutput(loss, torch.bincount(kept.latents, minlength=pre.shape[1]))

    def kept_codes(self, x) -> tuple[torch.Tensor, _Kept]:
        """The pre-activations of ``x`` and its batch-level TopK codes as (row, latent, value)
        triples in row order (see :class:`_Kept`)."""
        pre = pre_activations(x, self.encoder_weight, self.encoder_bias, self.bias)
        acts = F.relu(pre)
        n_samples, K = acts.shape
        kept = _batch_topk_kept(acts.detach(), self.k)
        rows, latents = kept // K, kept % K
        offsets = torch.searchsorted(rows, torch.arange(n_samples, device=rows.device))
        return pre, _Kept(latents, acts.flatten()[kept], offsets)

    def decode_kept(self, kept, weights=None) -> torch.Tensor:
        """Each row's kept latents' atoms times their values (or ``weights``), summed: decoded
        as TopK decodes its codes, since the dense (n, K) @ (K, d) product and its backward
        pass would cost two more GEMMs the size of the encoder's (docs/performance.md,
        "BatchTopK's own overhead")."""
        weights = kept.values if weights is None else weights
        return F.embedding_bag(
            kept.latents, self.dictionary, kept.offsets, mode="sum", per_sample_weights=weights
        )

    def _aux_term(self, x, x_hat, pre, dead_mask):
        return auxk_term(x, x_hat, pre, dead_mask, self.dictionary, self.aux_coef)

    @torch.no_grad()
    def _update_threshold(self, kept):
        """Move the threshold towards the smallest of the batch's ``kept`` (positive) codes."""
        if kept.numel() == 0:
            return
        smallest = kept.min()
        if self.threshold < 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, _THRESHOLD_MOMENTUM)


class BatchTopKSAE(_KSparseSAE):
    """Sparse autoencoder with a BatchTopK encoder (Bussmann, Leask & Nanda, 2024).

    In training, the ``n_nonzero_coefs * batch_size`` largest activations
    ``relu(W_enc (x - b) + b_enc)`` of the whole batch are kept, so the number of latents per
    sample varies (a hard sample gets more) while the average is ``n_nonzero_coefs``. At
    inference, where a batch is not a meaningful unit, each sample keeps every activation above
    ``threshold_``, a running average of the smallest activation kept in the training batches,
    so that codes no longer depend on the other samples. Dead latents are revived by the AuxK
    loss, as in :class:`TopKSAE`. Measured against the other SAEs in ``docs/benchmarks.md``
    (section 1).

    Parameters
    ----------
    n_components : int, default=256
        Number of latents (dictionary rows).
    n_nonzero_coefs : int, default=16
        k, the mean number of latents kept per sample in training; a k over ``n_components``
        keeps every latent, with a warning (as :class:`TopKSAE`).
    transform_n_nonzero_coefs : int, default=None
        None: :meth:`transform` keeps the activations above ``threshold_`` (the published
        method). An int: keep the k largest per sample instead, as :class:`TopKSAE` does
        (capped at ``n_components`` in the same way).
    aux_coef : float, default=1/32
        Weight of the AuxK loss (0 disables it).
    max_iter : int, default=50
        Epochs in :meth:`fit`.
    batch_size : int, default=256
        Samples per Adam step, and the unit over which the top activations are chosen.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate; "auto" is ``3e-3 * min(1, sqrt(256 / n_components))``, the
        rate of :class:`TopKSAE`. Linear warm-up over the first 5% of steps, linear decay to
        zero over the last 20% of a fit.
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
    threshold_ : float
        Inference threshold on the activations, in the data's units.
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
    TopKSAE : The same encoder with k latents for every sample.
    MatryoshkaSAE : BatchTopK with nested dictionaries.
    JumpReLUSAE : Per-latent thresholds trained with an L0 penalty.

    References
    ----------
    B. Bussmann, P. Leask and N. Nanda, "BatchTopK Sparse Autoencoders", arXiv:2412.06410, 2024.

    L. Gao et al., "Scaling and evaluating sparse autoencoders", arXiv:2406.04093, 2024 (AuxK).

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import BatchTopKSAE
    >>> X = np.random.RandomState(0).rand(200, 20).astype(np.float32)
    >>> sae = BatchTopKSAE(n_components=32, n_nonzero_coefs=4, max_iter=5, random_state=0)
    >>> codes = sae.fit_transform(X)
    >>> codes.shape
    (200, 32)
    >>> bool(sae.threshold_ > 0)
    True
    """

    _published_params = {
        **_KSparseSAE._published_params,
        "threshold": ("threshold_", True),
    }

    def _make_module(self, n_features, dtype, device):
        return _BatchTopKModule(
            self.n_components,
            n_features,
            self._k(self.n_nonzero_coefs, "n_nonzero_coefs"),
            self.fit_intercept,
            dtype,
            device,
            aux_coef=self.aux_coef,
        )

    def _encode(self, X, params):
        weight, encoder_bias = params["encoder_weights_"], params["encoder_intercept_"]
        if self.transform_n_nonzero_coefs is None:
            pre = pre_activations(X, weight, encoder_bias, params["intercept_"])
            return _threshold_codes(pre, params["threshold_"])
        k = self._k(self.transform_n_nonzero_coefs, "transform_n_nonzero_coefs")
        values, indices, _ = _topk_codes(X, weight, encoder_bias, params["intercept_"], k)
        return _scatter_codes(indices, values, self.n_components)
