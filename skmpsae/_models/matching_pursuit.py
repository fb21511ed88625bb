"""MP-SAE: a sparse autoencoder whose encoder unrolls matching pursuit on its own dictionary.

The estimator; its torch module (the selection, the differentiable loss, early stops and the
revival term) is ``matching_pursuit_module.py``.
"""

import warnings
from numbers import Integral, Real

import torch

from .._compat import Interval, StrOptions
from .._pursuit.encode import _scatter_codes, _select_omp, _sparse_steps
from .._pursuit.grad import (
    _mp_coefficients,
)
from .._pursuit.gram import _gram
from .._pursuit.selection import PATHS, _select_mp
from .._utils import NotBoolInterval
from .base import _BaseSAE
from .matching_pursuit_module import _MatchingPursuitModule, _steps_kept


class MatchingPursuitSAE(_BaseSAE):
    """Sparse autoencoder with a matching-pursuit encoder (MP-SAE).

    The encoder runs ``n_nonzero_coefs`` greedy steps over the dictionary: each picks the atom
    most correlated with the residual, adds that correlation to the atom's code and subtracts
    its contribution from the residual (Mallat & Zhang, 1993; MP-SAE, arXiv:2506.03093). The
    dictionary is shared by encoder and decoder and trained on the reconstruction error alone,
    with rows kept at unit norm. Because each step can only lower the residual, the sparsity can
    be changed at inference time (``transform_n_nonzero_coefs``, ``transform_tol``) without
    refitting, and more steps never hurt.

    Parameters
    ----------
    n_components : int, default=256
        Number of atoms (dictionary rows).
    n_nonzero_coefs : int, default=16
        Matching-pursuit steps during training. An atom may be chosen more than once, so codes
        have at most this many non-zeros.
    positive_code : bool, default=True
        Select by the largest positive correlation, giving non-negative codes (the papers'
        default); if False, select by absolute correlation and allow negative codes.
    transform_algorithm : {"mp", "omp"}, default="mp"
        Encoder used by :meth:`transform`: the trained matching pursuit, or orthogonal matching
        pursuit on the learned dictionary (least-squares coefficients on the chosen atoms).
    transform_n_nonzero_coefs : int, default=None
        Steps at inference. None: ``n_nonzero_coefs`` if ``transform_tol`` is None, else up to
        ``n_components`` steps (``min(n_components, n_features)`` for OMP).
    transform_tol : float, default=None
        Stop encoding a sample once its squared residual norm is at most this value.
    min_cosine : float, default=0.0
        Stop a sample's pursuit, in training and in :meth:`transform` (matching pursuit
        only), at the first step whose atom has a cosine below this value with the residual
        (``value / ||residual||``): the step would explain less than ``min_cosine**2`` of
        what is left, which on data made of features in superposition is mostly the noise of
        their overlaps. Codes then have at most ``n_nonzero_coefs`` non-zeros, fewer where the
        pursuit stops early. 0 (the default) never stops early. A positive value trades
        reconstruction for latents closer to the data's features; or train with it and encode
        with ``set_params(min_cosine=0)``. Measured on SynthSAEBench in ``docs/benchmarks.md``
        (section 8, "MP-SAE variants").
    revival_coef : float, default=1/32
        Weight of the dead-atom revival term (0 disables it): atoms chosen for no sample over
        the last epoch's worth of samples are turned, each towards the batch residual it is
        closest to, until the pursuit picks them again. Live atoms are untouched, and with
        Adam's scaling of each atom's step any positive weight moves dead atoms at the
        learning rate.
        Measured in ``docs/benchmarks.md`` (dead atoms and held-out R2 with and without).
    max_iter : int, default=35
        Epochs (passes over the training data) in :meth:`fit`.
        Measured in docs/benchmarks.md, "Where the defaults come from".
    batch_size : int or "auto", default="auto"
        Samples per optimiser step. "auto" is ``n_components / 2``, at least 512 and at most
        4,096 (512 up to 1,024 atoms, 4,096 from 8,192): a training step at large K costs the
        Gram matrix of the selected atoms (``2 K^2 d`` flops at most) whatever the batch, and
        at K/2 rows it costs about half of the batch's other work (docs/performance.md,
        "Defaults at large n_components").
    learning_rate : float or "auto", default="auto"
        Peak learning rate of the optimiser, Adam with one second-moment estimate per atom
        (so that a step turns each atom without distorting it); "auto" is
        ``5e-2 * min(1, sqrt(256 / n_components))``. Reached after a linear warm-up over the
        first 5% of steps (at most 100), decayed linearly to zero over the last half of the
        steps of a fit.
        Measured in docs/benchmarks.md, "Where the defaults come from".
    fit_intercept : bool, default=True
        Learn a bias ``b`` (initialised to the data mean): codes are computed from ``X - b`` and
        reconstructions are ``codes @ components_ + b``.
    dict_init : array-like of shape (n_components, n_features), default=None
        Initial dictionary, e.g. ``DictionaryLearning().components_``; rows are normalised.
        None: centred training samples picked at random, with a little noise.
        Measured in docs/benchmarks.md, "Where the defaults come from".
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the shuffling. Fits with the same integer are identical
        on the CPU; torch's global random number generator is never touched.
    device : str or torch.device, default="auto"
        Where training and encoding run: "auto" (CUDA if available, else CPU), "cpu", "cuda"...
    verbose : int, default=0
        Print the loss and the number of dead atoms after each epoch.
    cache_size : float, default=2048
        Memory budget in MiB (2**20 bytes) of the encoder's arrays n_components wide: the Gram
        matrix ``D D^T`` or the rows of it computed for the atoms selected, and blocks of
        correlations. A fitted model caches the whole Gram matrix for :meth:`transform` only
        if it takes at most half of the budget (up to 16,384 atoms in float32 at the
        default); otherwise, and in training, each batch takes the cheapest exact path that
        fits (the whole matrix, its rows for the atoms selected, or one correlation GEMM per
        step): the codes are the same. A budget too small for any path raises a ValueError.
    selection_dtype : {"bfloat16", "float16"}, default=None
        Precision of the GEMMs that select atoms (the first correlations, the Gram matrix or
        its rows, the per-step correlations), in training and in :meth:`transform`. None:
        the data's dtype. A half-precision type runs them on a GPU's tensor cores at half the
        memory traffic; the dictionary (the master weights), the coefficients, the gradients
        and the codes stay in the data's dtype and are exact for the atoms selected: only
        which atom wins a near tie can change. Matching pursuit only (OMP runs in full
        precision). Training with small dictionaries, which computes the exact correlations
        for its loss anyway, selects from those. On a CPU, half-precision GEMMs are far
        slower: leave it None there.
        Measured effect on R2: see docs/performance.md.
    selection_method : {"auto", "cost_model", "gram", "rows", "gemm"}, default="auto"
        How the pursuit finds each step's atom where no Gram matrix is at hand (training
        beyond about 3,000 atoms; :meth:`transform` beyond what ``cache_size`` caches). The
        exact paths give the same codes up to rounding: "gram" computes the whole Gram
        matrix, "rows" its rows for the atoms selected, "gemm" one correlation GEMM per step.
        "auto" times the paths that a cost model leaves as candidates on the first training
        batch, keeps the fastest for the run and for :meth:`transform`, and remembers it in
        this process; the measuring costs the other candidates' time on one batch. ``fit``
        writes no file: ``skmpsae tune`` (or ``SKMPSAE_SELECTION_CACHE=1``) saves the choice
        for this machine and these sizes in ``~/.cache/skmpsae/selection.json``, which later
        fits read instead of measuring (docs/performance.md). "cost_model" lets the model
        choose per batch without measuring; a path's name forces that path everywhere.
        Measured in docs/performance.md ("Epoch time against n_components").
    sparse_output : bool, default=False
        If True, :meth:`transform` returns a ``scipy.sparse`` CSR matrix built from the
        selected atoms, never a dense (n_samples, n_components) array (as
        ``OneHotEncoder(sparse_output=True)``); set it at large ``n_components``.
        :meth:`score` always takes the sparse path.
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
        The dictionary, one unit-norm atom per row.
    intercept_ : ndarray of shape (n_features,)
        The bias ``b`` (zeros if ``fit_intercept=False``).
    n_iter_ : int
        Epochs run (a :meth:`partial_fit` call counts as one).
    n_steps_ : int
        Adam steps taken.
    loss_curve_ : list of float
        Mean squared reconstruction error per epoch, relative to the data's variance
        (close to ``1 - R2`` on the training data).
    n_dead_components_ : int
        Atoms chosen for no sample during the last epoch.
    selection_method_ : str
        The selection path ("gram", "rows" or "gemm") of the last training batch.
    selection_seconds_ : dict
        Seconds each candidate path took on the batch where ``selection_method="auto"``
        timed them (in this fit, or in an earlier run whose choice the cache recalled);
        empty where nothing was timed (one candidate, a Gram matrix at hand, a forced path).
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
    TopKSAE : One-layer encoder keeping the k largest pre-activations.
    ReLUSAE : One-layer ReLU encoder with an L1 penalty.
    matching_pursuit : The encoder as a function.
    sklearn.decomposition.MiniBatchDictionaryLearning : Dictionary learning with sparse coding.

    Notes
    -----
    Defaults were tuned on 4,000 MNIST digits scaled to [0, 1] (1,000 held out), 256 atoms,
    k=16, float32 on 2 CPU cores; see ``docs/benchmarks.md`` for the measurements.

    Encoding uses the Gram formulation: one GEMM ``(X - b) D^T``, then per step an argmax and an
    update with one row of the cached ``D D^T``, O(n_components) per sample. Where the Gram
    matrix does not fit ``cache_size`` (or, in training, where its rows for the atoms a batch
    selects, or one correlation GEMM per step, cost less) the same codes come from those; see
    ``docs/performance.md`` for the measurements at 16,384 and 65,536 atoms.

    References
    ----------
    .. [1] S. Mallat and Z. Zhang, "Matching pursuits with time-frequency dictionaries",
       IEEE Transactions on Signal Processing, 41(12), 1993.
    .. [2] V. Costa, T. Fel, E. S. Lubana, B. Tolooshams and D. Ba, "From Flat to
       Hierarchical: Extracting Sparse Representations with Matching Pursuit", 2025,
       arXiv:2506.03093.
    .. [3] V. Costa, T. Fel, E. S. Lubana, B. Tolooshams and D. Ba, "Evaluating Sparse
       Autoencoders: From Shallow Design to Matching Pursuit", 2025, arXiv:2506.05239.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> X = np.random.RandomState(0).rand(200, 20).astype(np.float32)
    >>> sae = MatchingPursuitSAE(n_components=32, n_nonzero_coefs=4, max_iter=5, random_state=0)
    >>> codes = sae.fit_transform(X)
    >>> codes.shape
    (200, 32)
    >>> bool((codes != 0).sum(axis=1).max() <= 4)
    True
    """

    _parameter_constraints: dict = {
        **_BaseSAE._parameter_constraints,
        "n_nonzero_coefs": [NotBoolInterval(Integral, 1, None, closed="left")],
        "positive_code": ["boolean"],
        "transform_algorithm": [StrOptions({"mp", "omp"})],
        "transform_n_nonzero_coefs": [NotBoolInterval(Integral, 1, None, closed="left"), None],
        "transform_tol": [Interval(Real, 0, None, closed="left"), None],
        "batch_size": [NotBoolInterval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "cache_size": [Interval(Real, 0, None, closed="neither")],
        "sparse_output": ["boolean"],
        "selection_dtype": [StrOptions({"bfloat16", "float16"}), None],
        "revival_coef": [Interval(Real, 0, None, closed="left")],
        "min_cosine": [NotBoolInterval(Real, 0, 1, closed="both")],
        "selection_method": [StrOptions({"auto", "cost_model", *PATHS})],
    }

    def __init__(
        self,
        n_components=256,
        *,
        n_nonzero_coefs=16,
        positive_code=True,
        transform_algorithm="mp",
        transform_n_nonzero_coefs=None,
        transform_tol=None,
        min_cosine=0.0,
        revival_coef=1 / 32,
        max_iter=35,
        batch_size="auto",
        learning_rate="auto",
        fit_intercept=True,
        dict_init=None,
        random_state=None,
        device="auto",
        verbose=0,
        cache_size=2048,
        sparse_output=False,
        selection_dtype=None,
        selection_method="auto",
        callback=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
    ):
        self.n_components = n_components
        self.n_nonzero_coefs = n_nonzero_coefs
        self.positive_code = positive_code
        self.transform_algorithm = transform_algorithm
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.transform_tol = transform_tol
        self.min_cosine = min_cosine
        self.revival_coef = revival_coef
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.fit_intercept = fit_intercept
        self.dict_init = dict_init
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.cache_size = cache_size
        self.sparse_output = sparse_output
        self.selection_dtype = selection_dtype
        self.selection_method = selection_method
        self.callback = callback
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol

    _init_from_samples = True
    _auto_learning_rate = 5e-2

    def _max_bytes(self):
        return int(self.cache_size * 2**20)

    def _batch_size(self):
        if self.batch_size != "auto":
            return self.batch_size
        return max(512, min(4096, self.n_components // 2))

    def _sparse_output(self):
        return self.sparse_output

    def _compute_dtype(self):
        return None if self.selection_dtype is None else getattr(torch, self.selection_dtype)

    def _check_params(self):
        if self.n_nonzero_coefs > self.n_components:
            # Allowed (a step may pick an atom again), but rarely what was meant.
            warnings.warn(
                f"{type(self).__name__}: n_nonzero_coefs={self.n_nonzero_coefs} is larger "
                f"than n_components={self.n_components}; a code has at most "
                f"{self.n_components} non-zeros, and the steps beyond select atoms again.",
                UserWarning,
                stacklevel=4,
            )

    def _make_module(self, n_features, dtype, device):
        return _MatchingPursuitModule(
            self.n_components,
            n_features,
            self.n_nonzero_coefs,
            self.positive_code,
            self.fit_intercept,
            dtype,
            device,
            max_bytes=self._max_bytes(),
            selection_dtype=self._compute_dtype(),
            revival_coef=self.revival_coef,
            min_cosine=self.min_cosine,
            selection_method=self.selection_method,
        )

    def _fitted_extras(self, module):
        return {
            "selection_method_": module.last_path,
            "selection_seconds_": dict(module.selection_seconds),
        }

    def _derived_settings(self):
        return (self._max_bytes(),)

    def _derived_tensors(self, tensors):
        # The Gram matrix is cached only if it takes at most half of the memory budget;
        # beyond, the encoder computes the rows it needs (same codes).
        dictionary = tensors["components_"]
        gram_bytes = dictionary.shape[0] ** 2 * dictionary.element_size()
        return {"gram": _gram(dictionary) if gram_bytes <= self._max_bytes() // 2 else None}

    def _encode(self, X, params):
        indices, values = self._select(X, params)
        return _scatter_codes(indices, values, self.n_components)

    def _encode_sparse(self, X, params):
        indices, values = (t.cpu().numpy() for t in self._select(X, params))
        return _sparse_steps(indices, values, self.n_components)

    def _transform_path(self, gram):
        """The selection path of :meth:`transform` ("auto": the cost model's choice)."""
        if self.selection_method in PATHS:
            return self.selection_method
        measured = getattr(self, "selection_method_", None)
        # The path timed in training, where no Gram matrix is cached to make it moot; the
        # whole-Gram path is left to the model, which knows whether the matrix fits.
        if gram is None and self.selection_method == "auto" and measured in ("rows", "gemm"):
            return measured
        return "auto"

    def _select(self, X, params):
        """Selected atoms and their values, each (n, k), for :meth:`transform`."""
        X = X - params["intercept_"]
        dictionary, gram = params["components_"], params["gram"]
        omp = self.transform_algorithm == "omp"
        # OMP cannot use more atoms than the dictionary's rank allows; MP may pick an atom
        # again, so an explicit k above n_components is honoured.
        max_steps = min(dictionary.shape) if omp else self.n_components
        k, tol = self.transform_n_nonzero_coefs, self.transform_tol
        if k is None:
            # A tolerance stops each sample by itself: allow every step until it does.
            k = self.n_nonzero_coefs if tol is None else max_steps
        max_bytes = self._max_bytes()
        if omp:
            return _select_omp(
                X, dictionary, min(k, max_steps), self.positive_code, tol, gram, max_bytes=max_bytes
            )
        compute_dtype = self._compute_dtype()
        indices, values, *_ = _select_mp(
            X,
            dictionary,
            k,
            self.positive_code,
            tol,
            gram,
            max_bytes=max_bytes,
            compute_dtype=compute_dtype,
            method=self._transform_path(gram),
        )
        if self.min_cosine:
            values = values * _steps_kept(X, values, self.min_cosine).to(values.dtype)
        if compute_dtype is not None:
            # The values came from half-precision correlations: recompute them exactly for the
            # atoms selected (the steps not taken stay 0).
            values = _mp_coefficients(X, dictionary, indices, (values != 0).to(X.dtype))
        return indices, values
