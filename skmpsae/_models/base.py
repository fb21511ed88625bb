"""The estimator base shared by every SAE: parameters, validation and the scikit-learn API.

A model file supplies a torch module (its parameters and its loss, see ``module.py``) and an
encoder over plain tensors. ``fit`` and ``partial_fit`` hand their data to a
:class:`~skmpsae._models.session.TrainingSession`, which builds or resumes the trainer, runs
it and publishes the result through :func:`~skmpsae._models.fitted.set_fitted_state`, the one
writer of fitted state. Internally the module trains on ``X / scale`` with ``scale`` the
data's RMS deviation: the default learning rate then means the same thing for pixels in
[0, 1], for activations around 1e6 and for signals around 1e-6.
"""

from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import metadata_routing
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .._compat import Interval, StrOptions, fit_context, get_feature_names
from .._metrics.reconstruction import explained_variance
from .._train.checkpoint import _Checkpointer, run_description
from .._train.contracts import SAEModule
from .._train.early_stopping import _validation_split
from .._train.tensors import _cached_tensors, _n_batches, _row_chunks
from .._utils import NotBoolInterval, resolve_device
from .fitted import set_fitted_state
from .session import InputDescription, TrainingSession, portable_state


class _BaseSAE(
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
    metaclass=ABCMeta,
):
    """Base class for the sparse autoencoders; not for direct use."""

    _parameter_constraints: dict = {
        "n_components": [NotBoolInterval(Integral, 1, None, closed="left")],
        "max_iter": [NotBoolInterval(Integral, 1, None, closed="left")],
        "batch_size": [NotBoolInterval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "fit_intercept": ["boolean"],
        "dict_init": ["array-like", None],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        "callback": [callable, None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [NotBoolInterval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }

    # fit's checkpoint arguments belong to one call, not to data a meta-estimator would route
    # (and no set_fit_request method should be generated for them).
    __metadata_request__fit = {
        "checkpoint_dir": metadata_routing.UNUSED,
        "checkpoint_every": metadata_routing.UNUSED,
        "resume": metadata_routing.UNUSED,
    }

    # Initial atoms: random centred samples (True) or random directions (False); each model
    # chooses by measurement (docs/benchmarks.md, "Where the defaults come from").
    _init_from_samples = False

    # Default peak learning rate at 256 atoms; a model may set its own.
    _auto_learning_rate = 3e-3

    # Names of module parameters -> (published attribute, whether it carries the data's units).
    _published_params = {"dictionary": ("components_", False), "bias": ("intercept_", True)}

    # -- hooks a model implements ------------------------------------------------------------
    @abstractmethod
    def _make_module(self, n_features: int, dtype: torch.dtype, device: torch.device) -> SAEModule:
        """Return the torch module with uninitialised parameters."""

    @abstractmethod
    def _encode(self, X: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Dense codes (n, n_components) of tensor ``X`` from published ``params`` (a dict of
        tensors named as ``_published_params``' attributes)."""

    def _encode_sparse(self, X, params):
        """Codes of a chunk ``X`` as a CSR matrix; a model whose encoder selects atoms
        overrides this to never build the chunk's dense codes."""
        return sparse.csr_matrix(self._encode(X, params).cpu().numpy())

    def _sparse_output(self):
        """Whether :meth:`transform` returns a CSR matrix (a model's ``sparse_output``)."""
        return False

    def _batch_size(self):
        """Rows per training step: ``batch_size``, or the model's rule for "auto"."""
        return self.batch_size

    def _learning_rate(self):
        """Peak learning rate; "auto" is the model's ``_auto_learning_rate`` up to 256 atoms,
        scaled down as 1/sqrt(n_components) beyond (the usual rule for SAEs, which keeps the
        size of an Adam step relative to the typical gradient as the dictionary grows)."""
        if self.learning_rate == "auto":
            return self._auto_learning_rate * min(1.0, np.sqrt(256 / self.n_components))
        return self.learning_rate

    # -- public API ------------------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, checkpoint_dir=None, checkpoint_every=1000, resume=False):
        """Fit the autoencoder on ``X`` for ``max_iter`` epochs of mini-batch Adam.

        The fitted attributes are replaced when the call succeeds; if it fails (divergence,
        an error, Ctrl-C before the first epoch ends) the estimator is left as it was. Ctrl-C
        after an epoch keeps the model of the last completed epoch, with a warning.

        When a ``torch.distributed`` process group is initialised (e.g. under ``torchrun``),
        the fit is data-parallel: call it with the same ``X`` (e.g. the same memory-mapped
        file) on every rank; each rank reads its share of every batch of ``batch_size`` rows
        and all ranks end with the same model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. A ``numpy.memmap`` is streamed batch by batch, never copied whole.
        y : Ignored
            Not used, present for API consistency by convention.
        checkpoint_dir : str or path-like, default=None
            Directory of the checkpoint (one file, ``checkpoint.pt``, replaced atomically),
            saved every ``checkpoint_every`` steps and at each epoch's end. None: no
            checkpoints.
        checkpoint_every : int, default=1000
            Training steps between checkpoints.
        resume : bool, default=False
            Continue from the checkpoint in ``checkpoint_dir``, which must come from a fit of
            the same estimator class and parameters (``verbose``, ``callback`` and
            ``device`` aside) on data of the same shape and dtype. The result is the model
            the interrupted fit would have given, bit for bit on the same machine.

        Returns
        -------
        self : object
            The fitted estimator.

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from skmpsae import MatchingPursuitSAE
        >>> X = np.random.RandomState(0).randn(200, 8)
        >>> sae = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=2, max_iter=3,
        ...                          random_state=0)
        >>> with tempfile.TemporaryDirectory() as directory:
        ...     sae = sae.fit(X, checkpoint_dir=directory, checkpoint_every=5)
        ...     # after a crash, the same call with resume=True continues the run
        ...     again = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=2, max_iter=3,
        ...                                random_state=0)
        ...     again = again.fit(X, checkpoint_dir=directory, resume=True)
        >>> bool(np.array_equal(sae.components_, again.components_))
        True
        """
        X, inputs = self._validate_new_data(X)
        X_validation = None
        if self.early_stopping:
            X, X_validation = _validation_split(
                X, validation_fraction=self.validation_fraction, random_state=self.random_state
            )
        run = run_description(name=type(self).__name__, params=self.get_params(deep=False), X=X)
        checkpointer = _Checkpointer.from_fit_args(
            run, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume
        )
        n_steps = self.max_iter * _n_batches(X.shape[0], self._batch_size())
        session = TrainingSession(self, learning_rate=self._learning_rate())
        if resume and checkpointer is not None:  # from_fit_args refuses resume without one
            trainer = session.checkpointed_trainer(X, checkpointer=checkpointer, n_steps=n_steps)
        else:
            trainer = session.new_trainer(X, n_steps=n_steps)
        session.run(
            X,
            trainer,
            n_epochs=self.max_iter - trainer.epoch,
            inputs=inputs,
            new_model=True,
            checkpointer=checkpointer,
            X_validation=X_validation,
        )
        return self

    @fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Continue training on ``X`` for one pass (epoch) of mini-batches.

        The first call initialises the model from ``X``. The learning rate warms up over the
        first steps and then stays constant, since the number of future calls is unknown.
        The optimiser state (Adam's moments) is kept between calls and pickled with the
        estimator, so training continues exactly after a save and load. A failing call leaves
        the estimator as it was. Under a ``torch.distributed`` process group, call it with the
        same ``X`` on every rank: training is data-parallel, as in :meth:`fit`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data, e.g. a slice of a memory-mapped array.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._partial_fit(X, n_steps=None)

    def _partial_fit(self, X, *, n_steps):
        """``partial_fit`` with the learning-rate schedule of a fit of ``n_steps`` steps in
        all (counted from the first call; None: warm-up, then constant), for a caller that
        knows how much data will come (:func:`skmpsae.activations.train`)."""
        session = TrainingSession(self, learning_rate=self._learning_rate())
        if not hasattr(self, "components_"):
            X, inputs = self._validate_new_data(X)
            trainer = session.new_trainer(X, n_steps=n_steps)
            session.run(X, trainer, n_epochs=1, inputs=inputs, new_model=True)
            return self
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        inputs = InputDescription(self.n_features_in_, getattr(self, "feature_names_in_", None))
        trainer = session.continued_trainer(X, n_steps=n_steps)
        session.run(X, trainer, n_epochs=1, inputs=inputs, new_model=False)
        return self

    def transform(self, X):
        """Encode ``X`` as sparse codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : {ndarray, sparse matrix} of shape (n_samples, n_components)
            Codes, mostly zeros, in the dtype of ``X`` (float32 or float64); a
            ``scipy.sparse`` CSR matrix, built without a dense intermediate, where the model
            has ``sparse_output=True``.
        """
        if self._sparse_output():
            return self._sparse_codes(X)
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        params = self._params_as_tensors(X.dtype)
        out = np.empty((X.shape[0], self.n_components), dtype=X.dtype)
        with torch.no_grad():
            for start, chunk in _row_chunks(X, params["components_"].device):
                out[start : start + chunk.shape[0]] = self._encode(chunk, params).cpu().numpy()
        return out

    def _sparse_codes(self, X):
        """:meth:`transform` as a CSR matrix, chunk by chunk (no dense (n, K) array)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        params = self._params_as_tensors(X.dtype)
        with torch.no_grad():
            blocks = [
                self._encode_sparse(chunk, params)
                for _, chunk in _row_chunks(X, params["components_"].device)
            ]
        return sparse.vstack(blocks, format="csr", dtype=X.dtype)

    def inverse_transform(self, X):
        """Reconstruct data from codes: ``X @ components_ + intercept_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_components)
            Codes, as returned by :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            Reconstruction, in the dtype of the codes (float32 or float64).
        """
        check_is_fitted(self)
        codes = check_array(
            X, accept_sparse=("csr", "csc", "coo"), dtype=[np.float64, np.float32], input_name="X"
        )
        if codes.shape[1] != self.n_components:
            raise ValueError(
                f"inverse_transform expects codes with n_components={self.n_components} columns, "
                f"got {codes.shape[1]}."
            )
        components = self.components_.astype(codes.dtype, copy=False)
        X_hat = np.asarray(safe_sparse_dot(codes, components))
        return X_hat + self.intercept_.astype(codes.dtype, copy=False)

    def score(self, X, y=None):
        """Explained variance (R2) of the reconstruction of ``X``; higher is better.

        ``1 - ||X - X_hat||^2 / ||X - mean(X, axis=0)||^2``, so ``GridSearchCV`` can select
        models with no ``scoring=``. Constant ``X``: 1.0 if reconstructed exactly, else 0.0.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode and reconstruct.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        score : float
            Explained variance of the reconstruction, at most 1.0 (perfect); 0.0 for a model
            no better than the per-feature mean of ``X``, negative for a worse one.

        See Also
        --------
        skmpsae.metrics.explained_variance : The same score from data and a reconstruction.
        """
        # Encoding validates X (feature names included); the metric needs the plain array. The
        # codes stay sparse: at 65,536 atoms dense codes of 10,000 rows would take 2.6 GB.
        X_hat = self.inverse_transform(self._sparse_codes(X))
        return explained_variance(check_array(X, dtype=[np.float64, np.float32]), X_hat)

    def to_sparse_coder(self, **kwargs):
        """The learned dictionary as a :class:`sklearn.decomposition.SparseCoder`.

        ``SparseCoder`` has no bias: feed it ``X - intercept_``, and add ``intercept_`` back to
        ``codes @ components_``.

        Parameters
        ----------
        **kwargs : dict
            Passed to ``SparseCoder`` with a copy of ``components_`` as its ``dictionary``,
            e.g. ``transform_algorithm="omp", transform_n_nonzero_coefs=16``.

        Returns
        -------
        coder : sklearn.decomposition.SparseCoder
            A coder over the learned dictionary; fitting it is not needed.

        See Also
        --------
        sklearn.decomposition.SparseCoder : Sparse coding against a fixed dictionary.
        """
        from sklearn.decomposition import SparseCoder

        check_is_fitted(self)
        return SparseCoder(dictionary=self.components_.copy(), **kwargs)

    @property
    def _n_features_out(self):
        # Read from the fitted dictionary, so that get_feature_names_out before fit raises
        # NotFittedError (check_is_fitted looks this attribute up).
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __getstate__(self):
        # A copy: object.__getstate__ returns the live __dict__, which must not lose its trainer.
        return portable_state(self, dict(super().__getstate__()))

    def _fitted_extras(self, module):
        """Further fitted attributes a model publishes from its trained module."""
        return {}

    # -- fitted state: one writer -----------------------------------------------------------
    def _set_fitted_state(self, arrays, **state):
        """Make the estimator fitted, through the one writer of fitted state
        (:func:`~skmpsae._models.fitted.set_fitted_state`, which documents ``state``)."""
        return set_fitted_state(self, arrays, **state)

    # -- validation ------------------------------------------------------------------------
    def _validate_new_data(self, X):
        """``X`` as a float array, and the :class:`InputDescription` of a new model."""
        self._check_params()
        feature_names = get_feature_names(X)
        X = check_array(X, dtype=[np.float64, np.float32], estimator=self, input_name="X")
        return X, InputDescription(X.shape[1], feature_names)

    def _check_params(self):
        """Checks of a parameter against another (beyond ``_parameter_constraints``), run
        when a new model is fitted; warnings only, as a fit stays possible."""

    # -- encoding helpers ------------------------------------------------------------------
    def _params_as_tensors(self, np_dtype):
        """Published parameters as tensors on the device, cached until they change."""
        device = resolve_device(self.device)
        arrays = {attr: getattr(self, attr) for attr, _ in self._published_params.values()}
        # The cache dict is created once and updated in place, so that transform never adds
        # attributes to a fitted estimator (scikit-learn's check_dict_unchanged).
        cache = self.__dict__.setdefault("_tensor_cache", {})
        return _cached_tensors(
            cache, arrays, np_dtype, device, self._derived_tensors, self._derived_settings()
        )

    def _derived_tensors(self, tensors):
        """Extra tensors computed once per dictionary (e.g. a Gram matrix)."""
        return {}

    def _derived_settings(self):
        """The parameters that :meth:`_derived_tensors` depends on, beyond the arrays."""
        return ()
