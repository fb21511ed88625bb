"""Matryoshka SAE: BatchTopK whose nested dictionary prefixes must each reconstruct the data
(Bussmann et al., 2025; Nabeshima, 2024)."""

from numbers import Integral

import numpy as np
import torch

from .._train.contracts import LossOutput
from .batchtopk import BatchTopKSAE, _BatchTopKModule


def _default_prefix_sizes(n_components):
    """``n/16, n/8, n/4, n/2, n``, without repeats and without zero."""
    sizes = {max(1, n_components >> shift) for shift in (4, 3, 2, 1, 0)}
    return tuple(sorted(sizes))


class _MatryoshkaModule(_BatchTopKModule):
    """Loss: the mean over prefixes ``m`` of the squared error of ``z[:, :m] @ D[:m] + b``
    (each relative to the data variance), plus the AuxK loss on the whole reconstruction.

    The prefix reconstructions are running sums of per-group decodes of the kept codes, so
    the cost is one sparse decode per group, nothing (n, K) wide beyond the encoder.
    """

    def __init__(
        self, n_components, n_features, k, prefix_sizes, fit_intercept, dtype, device, aux_coef
    ):
        super().__init__(n_components, n_features, k, fit_intercept, dtype, device, aux_coef)
        self.prefix_sizes = tuple(prefix_sizes)

    def prefix_errors(self, x, kept):
        """Squared reconstruction error (mean over samples) of each prefix, in order, and the
        whole reconstruction."""
        x_hat = self.bias.expand_as(x)
        errors, start = [], 0
        for stop in self.prefix_sizes:
            group = (kept.latents >= start) & (kept.latents < stop)
            x_hat = x_hat + self.decode_kept(kept, kept.values * group)
            errors.append(((x - x_hat) ** 2).sum(dim=1).mean())
            start = stop
        return torch.stack(errors), x_hat

    def loss(self, x, dead_mask=None, sparsity_scale=1.0):
        """As :class:`_BatchTopKModule`'s, with the mean of the prefix errors."""
        pre, kept = self.kept_codes(x)
        errors, x_hat = self.prefix_errors(x, kept)
        loss = errors.mean() / x.shape[1] + self._aux_term(x, x_hat, pre, dead_mask)
        if torch.is_grad_enabled():
            self._update_threshold(kept.values.detach())
        return LossOutput(loss, torch.bincount(kept.latents, minlength=pre.shape[1]))


class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK sparse autoencoder with nested (Matryoshka) dictionaries.

    The latents are ordered: for every size ``m`` in ``prefix_sizes``, the first ``m`` latents
    alone must reconstruct the data, and the training loss is the mean of these prefix
    reconstruction errors. The first latents are thereby pushed to general features (a parent
    concept in a hierarchy) and later ones to refinements, instead of the later latents
    absorbing the parent into each child ("feature absorption"). Encoding is BatchTopK's
    (:class:`BatchTopKSAE`): the ``n_nonzero_coefs * batch_size`` largest activations of a batch
    in training, a learned threshold at inference. ``transform(X)[:, :m]`` with
    ``components_[:m]`` is a coarser model of its own.

    Parameters
    ----------
    n_components : int, default=256
        Number of latents (dictionary rows).
    prefix_sizes : array-like of int, default=None
        Sizes of the nested prefixes, strictly increasing, each at most ``n_components``; the
        whole dictionary is always the last prefix (appended if missing). None:
        ``n/16, n/8, n/4, n/2, n`` for ``n = n_components``, halvings as in the paper's
        nested groups. The nesting costs some reconstruction against :class:`BatchTopKSAE`
        (``docs/benchmarks.md``, section 1).
    n_nonzero_coefs : int, default=16
        k, the mean number of latents kept per sample in training; a k over ``n_components``
        keeps every latent, with a warning (as :class:`TopKSAE`).
    transform_n_nonzero_coefs : int, default=None
        None: :meth:`transform` keeps the activations above ``threshold_``. An int: keep the k
        largest per sample instead (capped at ``n_components``, as :class:`TopKSAE`).
    aux_coef : float, default=1/32
        Weight of the AuxK loss (0 disables it).
    max_iter : int, default=50
        Epochs in :meth:`fit`.
    batch_size : int, default=256
        Samples per Adam step, and the unit over which the top activations are chosen.
    learning_rate : float or "auto", default="auto"
        Peak Adam learning rate; "auto" is ``3e-3 * min(1, sqrt(256 / n_components))``. Linear
        warm-up over the first 5% of steps, linear decay to zero over the last 20% of a fit.
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
        Decoder rows, unit norm, ordered from general to specific.
    intercept_ : ndarray of shape (n_features,)
        The bias ``b``.
    encoder_weights_ : ndarray of shape (n_components, n_features)
        Encoder matrix ``W_enc``.
    encoder_intercept_ : ndarray of shape (n_components,)
        Encoder bias ``b_enc``, in the data's units.
    threshold_ : float
        Inference threshold on the activations, in the data's units.
    prefix_sizes_ : tuple of int
        The prefix sizes used, the last being ``n_components``.
    n_iter_ : int
        Epochs run.
    n_steps_ : int
        Adam steps taken.
    loss_curve_ : list of float
        Training loss per epoch (mean prefix error relative to the data variance, plus the
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
    BatchTopKSAE : The same encoder with a single reconstruction loss.
    MatchingPursuitSAE : Residual-guided encoder for hierarchical, correlated features.

    References
    ----------
    B. Bussmann, N. Nabeshima, A. Karvonen and N. Nanda, "Learning Multi-Level Features with
    Matryoshka Sparse Autoencoders", arXiv:2503.17547, 2025.

    N. Nabeshima, "Matryoshka Sparse Autoencoders", LessWrong, 2024.

    B. Bussmann, P. Leask and N. Nanda, "BatchTopK Sparse Autoencoders", arXiv:2412.06410, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatryoshkaSAE
    >>> X = np.random.RandomState(0).rand(200, 20).astype(np.float32)
    >>> sae = MatryoshkaSAE(n_components=32, prefix_sizes=[4, 16], n_nonzero_coefs=4,
    ...                     max_iter=5, random_state=0).fit(X)
    >>> sae.prefix_sizes_
    (4, 16, 32)
    """

    _parameter_constraints: dict = {
        **BatchTopKSAE._parameter_constraints,
        "prefix_sizes": ["array-like", None],
    }

    def __init__(
        self,
        n_components=256,
        *,
        prefix_sizes=None,
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
        super().__init__(
            n_components,
            n_nonzero_coefs=n_nonzero_coefs,
            transform_n_nonzero_coefs=transform_n_nonzero_coefs,
            aux_coef=aux_coef,
            max_iter=max_iter,
            batch_size=batch_size,
            learning_rate=learning_rate,
            fit_intercept=fit_intercept,
            dict_init=dict_init,
            random_state=random_state,
            device=device,
            verbose=verbose,
            callback=callback,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
        )
        self.prefix_sizes = prefix_sizes

    def _check_prefix_sizes(self):
        # Checked in fit when the module is built (and by io.load), as scikit-learn checks a
        # parameter whose valid values depend on another (here n_components).
        n = self.n_components
        if self.prefix_sizes is None:
            return _default_prefix_sizes(n)
        # dtype=object keeps each entry as given, so a bool or a float is seen as one.
        sizes = np.asarray(self.prefix_sizes, dtype=object)
        if (
            sizes.ndim != 1
            or sizes.size == 0
            or not all(
                isinstance(s, Integral) and not isinstance(s, (bool, np.bool_)) for s in sizes
            )
        ):
            raise ValueError(
                f"prefix_sizes must be a non-empty 1-d sequence of ints, got {self.prefix_sizes!r}."
            )
        sizes = [int(s) for s in sizes]
        increasing = all(a < b for a, b in zip(sizes, sizes[1:], strict=False))
        if sizes[0] < 1 or sizes[-1] > n or not increasing:
            raise ValueError(
                "prefix_sizes must be strictly increasing, each between 1 and n_components="
                f"{n}; got {self.prefix_sizes!r}."
            )
        return tuple(sizes) if sizes[-1] == n else (*sizes, n)

    def _make_module(self, n_features, dtype, device):
        return _MatryoshkaModule(
            self.n_components,
            n_features,
            self._k(self.n_nonzero_coefs, "n_nonzero_coefs"),
            self._check_prefix_sizes(),
            self.fit_intercept,
            dtype,
            device,
            aux_coef=self.aux_coef,
        )

    def _fitted_extras(self, module):
        # Published with the rest, so that a failed fit leaves no trace of it.
        return {"prefix_sizes_": module.prefix_sizes}
