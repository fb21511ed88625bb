"""The estimator base shared by every SAE: parameters, validation and the scikit-learn API.

A model file supplies a torch module (its parameters and its loss, see ``module.py``) and an
encoder over plain tensors. ``fit`` and ``partial_fit`` build a ``_Trainer`` from explicit
settings (``_train/trainer.py``), run it through ``_train.loop.train_epochs`` and publish what
comes back with :meth:`_BaseSAE._set_fitted_state`, the one writer of fitted state (``io.load``,
``from_saelens`` and ``from_sparsify`` use it too). Everything a scikit-learn user touches
lives here, once: the public methods with their numpydoc (half of the file), the trainer's
construction and the writing of fitted state, which is why the file is over 400 lines.

Fitted state is published as numpy arrays in the data's own units (``components_``,
``intercept_``, ...), never as pickled torch objects, so a model fitted on a GPU loads on a
CPU-only machine. Internally the module trains on ``X / scale`` with ``scale`` the data's RMS
deviation: the default learning rate then means the same thing for pixels in [0, 1], for
activations around 1e6 and for signals around 1e-6.
"""

import warnings
from abc import ABCMeta, abstractmethod
from functools import partial
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state, metadata_routing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import (
    _get_feature_names,
    check_array,
    check_is_fitted,
    validate_data,
)

from .._metrics.reconstruction import explained_variance
from .._train.checkpoint import (
    _Checkpointer,
    run_description,
    state_as_arrays,
    state_from_arrays,
)
from .._train.distributed import is_main_process
from .._train.early_stopping import _EarlyStopping, _validation_split
from .._train.loop import train_epochs
from .._train.progress import epoch_reporter
from .._train.tensors import _cached_tensors, _n_batches, _row_chunks, _torch_dtype
from .._train.trainer import _Trainer
from .._utils import NotBoolInterval, resolve_device
from .training import initialize_module, load_published, module_arrays, validation_score


class _LiveTrainer(NamedTuple):
    """The trainer of the last training call and the ``components_`` it published: the next
    ``partial_fit`` goes on with it (Adam's moments included) while they are still published."""

    trainer: Any
    components: np.ndarray


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

    # Initial atoms: random centred samples (True) or random directions (False). Measured on
    # MNIST (4k/1k, 256 atoms, k=16, 15 epochs), held-out R2: MP 0.790 from samples vs 0.746
    # from random directions; TopK 0.680 vs 0.729, as an encoder initialised to correlated
    # sample atoms starts by overshooting (initial loss 10x the data variance).
    _init_from_samples = False

    # Default peak learning rate at 256 atoms; each model sets its own and reports its MNIST
    # measurements in its docstring (TopK keeps 3e-3 although 1e-2 scores a little higher, as
    # 1e-2 leaves 28 dead latents).
    _auto_learning_rate = 3e-3

    # Names of module parameters -> (published attribute, whether it carries the data's units).
    _published_params = {"dictionary": ("components_", False), "bias": ("intercept_", True)}

    # -- hooks a model implements ------------------------------------------------------------
    @abstractmethod
    def _make_module(self, n_features, dtype, device):
        """Return the torch module with uninitialised parameters."""

    @abstractmethod
    def _encode(self, X, params):
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

    def _shuffle_seed(self):
        return check_random_state(self.random_state).randint(2**31 - 1)

    # -- public API ------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
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
        X, new_input = self._validate_new_data(X)
        X_validation = None
        if self.early_stopping:
            X, X_validation = _validation_split(X, self.validation_fraction, self.random_state)
        run = run_description(type(self).__name__, self.get_params(deep=False), X)
        checkpointer = _Checkpointer.from_fit_args(run, checkpoint_dir, checkpoint_every, resume)
        n_steps = self.max_iter * _n_batches(X.shape[0], self._batch_size())
        if resume:
            trainer = self._checkpointed_trainer(X, checkpointer, n_steps)
        else:
            trainer = self._new_trainer(X, n_steps)
        self._train(
            X,
            trainer,
            self.max_iter - trainer.epoch,
            new_input=new_input,
            checkpointer=checkpointer,
            X_validation=X_validation,
        )
        return self

    @_fit_context(prefer_skip_nested_validation=True)
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
        return self._partial_fit(X, None)

    def _partial_fit(self, X, n_steps):
        """``partial_fit`` with the learning-rate schedule of a fit of ``n_steps`` steps in
        all (counted from the first call; None: warm-up, then constant), for a caller that
        knows how much data will come (:func:`skmpsae.activations.train`)."""
        if not hasattr(self, "components_"):
            X, new_input = self._validate_new_data(X)
            trainer = self._new_trainer(X, n_steps)
            self._train(X, trainer, 1, new_input=new_input)
            return self
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        live = self.__dict__.get("_live_trainer")
        if live is not None and live.components is self.components_:
            trainer = live.trainer
        else:
            trainer = self._resume_trainer()
        # Reproducible shuffles that still differ from one partial_fit call to the next.
        seed = (self._shuffle_seed() + self.n_iter_) % (2**31 - 1)
        trainer.start_call(self._learning_rate(), n_steps, seed, X.shape[0])
        self._train(X, trainer, 1)
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
        state = dict(super().__getstate__())
        # Torch objects are tied to a device and a torch version: the trainer travels as its
        # state_dict in numpy arrays, so that partial_fit after unpickling continues with its
        # Adam moments and the pickle still holds no torch object.
        live = state.pop("_live_trainer", None)
        state.pop("_tensor_cache", None)
        if live is not None and live.components is self.components_:
            state["_trainer_state"] = state_as_arrays(live.trainer.state_dict())
        return state

    # -- training: the trainer gets explicit settings, the estimator publishes its result ---
    def _new_trainer(self, X, n_steps):
        """The trainer ``fit`` runs: a new module started from a sample of ``X``, ``n_steps``
        planned steps (None for ``partial_fit``). Tests build one to drive it step by step."""
        module = self._make_module(X.shape[1], _torch_dtype(X.dtype), torch.device("cpu"))
        scale = initialize_module(
            module,
            X,
            fit_intercept=self.fit_intercept,
            dict_init=self.dict_init,
            init_from_samples=self._init_from_samples,
            random_state=self.random_state,
            name=type(self).__name__,
        )
        module.to(resolve_device(self.device))
        return self._make_trainer(module, scale, n_steps, self._shuffle_seed(), X.shape[0])

    def _resume_trainer(self):
        """A trainer over the published parameters, with the Adam moments and counters saved
        when the estimator was pickled if they belong to these parameters; else fresh."""
        dtype = _torch_dtype(self.components_.dtype)
        module = self._make_module(self.n_features_in_, dtype, resolve_device(self.device))
        load_published(module, self._published_arrays(), self._published_params, self._data_scale)
        trainer = self._make_trainer(
            module, self._data_scale, None, 0, 1, self.n_steps_, self.n_iter_
        )
        state = getattr(self, "_trainer_state", None)
        if state is not None and np.array_equal(
            state["module"]["dictionary"]["__tensor__"], self.components_
        ):
            trainer.load_state_dict(state_from_arrays(state))
        return trainer

    def _checkpointed_trainer(self, X, checkpointer, n_steps):
        """A trainer restored from ``checkpointer``'s checkpoint, for ``fit(..., resume=True)``."""
        state = checkpointer.resume()
        module = self._make_module(X.shape[1], _torch_dtype(X.dtype), torch.device("cpu"))
        module.to(resolve_device(self.device))
        trainer = self._make_trainer(module, state["scale"], n_steps, 0, X.shape[0])
        trainer.load_state_dict(state)
        return trainer

    def _make_trainer(self, module, scale, n_steps, shuffle_seed, dead_window, step=0, epoch=0):
        return _Trainer(
            module,
            learning_rate=self._learning_rate(),
            n_steps=n_steps,
            scale=scale,
            shuffle_seed=shuffle_seed,
            dead_window=dead_window,
            step=step,
            epoch=epoch,
            name=type(self).__name__,
        )

    def _train(self, X, trainer, n_epochs, new_input=None, checkpointer=None, X_validation=None):
        """Run ``n_epochs`` epochs of ``trainer`` and publish the result.

        Nothing is published unless an epoch completes: on divergence or another error the
        estimator is left as it was and the error propagates. Ctrl-C is handled here, once: it
        keeps the last completed epoch with a warning; before one completes, a new model
        (``new_input`` from :meth:`_validate_new_data`) re-raises it and a published model
        being trained further is kept as it was, with a warning.
        """
        # What the callback reports as the epochs of this call: all of a resumed fit's.
        total_epochs = n_epochs if checkpointer is None else self.max_iter
        report = epoch_reporter(
            self, total_epochs, self.verbose, self.callback, main_process=is_main_process()
        )
        early_stopping = None
        if X_validation is not None:
            score = partial(
                validation_score,
                X_validation=X_validation,
                encode=self._encode,
                derive=self._derived_tensors,
                published_params=self._published_params,
            )
            early_stopping = (_EarlyStopping(self.n_iter_no_change, self.tol), score)
        previous = getattr(self, "loss_curve_", []) if new_input is None else []
        try:
            result = train_epochs(
                trainer,
                X,
                n_epochs,
                batch_size=self._batch_size(),
                loss_curve=previous,
                n_dead=getattr(self, "n_dead_components_", None),
                report=report,
                checkpointer=checkpointer,
                early_stopping=early_stopping,
            )
        except BaseException:
            self._forget_trainer(trainer)
            raise
        if result.interrupted and result.n_epochs == 0:
            self._forget_trainer(trainer)
            if new_input is not None:
                raise KeyboardInterrupt  # a new model with no completed epoch: nothing to keep
            warnings.warn(
                f"Training interrupted; {type(self).__name__} keeps the model it had before "
                f"this call ({self.n_iter_} epochs in all).",
                UserWarning,
                stacklevel=3,
            )
            return
        if result.interrupted:
            warnings.warn(
                f"Training interrupted; {type(self).__name__} keeps the model of the last "
                f"completed epoch ({trainer.epoch} epochs in all).",
                UserWarning,
                stacklevel=3,
            )
        self._publish(trainer, result, new_input)

    def _forget_trainer(self, trainer):
        # A live trainer that a failed call has half-updated must not be trained further:
        # the next partial_fit rebuilds one from the published arrays.
        live = self.__dict__.get("_live_trainer")
        if live is not None and live.trainer is trainer:
            del self._live_trainer

    def _publish(self, trainer, result, new_input):
        """Publish what a completed training call learned, and keep its trainer live for the
        next ``partial_fit``."""
        new_model = new_input is not None
        if not new_model:  # training went on: the input description stays
            new_input = {
                "n_features_in_": self.n_features_in_,
                "feature_names_in_": getattr(self, "feature_names_in_", None),
            }
        self._set_fitted_state(
            module_arrays(trainer.module, self._published_params, trainer.scale),
            **new_input,
            n_iter=trainer.epoch,
            n_steps=trainer.step,
            loss_curve=result.loss_curve,
            n_dead=result.n_dead,
            data_scale=trainer.scale,
            reset=new_model,
            fitted={
                "validation_scores_": result.validation_scores,
                "best_validation_score_": result.best_validation_score,
                **self._fitted_extras(trainer.module),
            },
        )
        self._live_trainer = _LiveTrainer(trainer, self.components_)

    def _fitted_extras(self, module):
        """Further fitted attributes a model publishes from its trained module."""
        return {}

    # -- fitted state: one writer -----------------------------------------------------------
    def _published_arrays(self):
        """The published parameters, {attribute: array}."""
        return {attr: getattr(self, attr) for attr, _ in self._published_params.values()}

    def _published_shapes(self, n_features):
        """{attribute: shape} of the published arrays for ``n_features`` inputs, read from the
        model's own module built on the meta device (no memory)."""
        module = self._make_module(n_features, torch.float32, torch.device("meta"))
        return {
            attr: tuple(getattr(module, name).shape)
            for name, (attr, _) in self._published_params.items()
        }

    def _set_fitted_state(
        self,
        arrays,
        *,
        n_features_in_=None,
        feature_names_in_=None,
        n_iter=0,
        n_steps=0,
        loss_curve=(),
        n_dead=None,
        data_scale=1.0,
        fitted=None,
        reset=True,
    ):
        """Make the estimator fitted: the one place fitted state is written, by ``fit``,
        ``partial_fit``, :func:`skmpsae.io.load`, ``from_saelens`` and ``from_sparsify``.

        ``arrays`` are the published parameters (already checked), ``feature_names_in_`` the
        input's column names or None, ``data_scale`` the RMS deviation the optimiser divides
        the data by (so that ``partial_fit`` can go on), and ``fitted`` further fitted
        attributes by name (``prefix_sizes_``, ``validation_scores_``, ...). With ``reset``
        (a new model) no public fitted attribute of an earlier model survives, such as the
        ``provenance_`` of rows it was fitted on before.
        """
        if reset:
            for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
                delattr(self, name)
        for name, value in arrays.items():
            # A 0-d array (BatchTopK's threshold_) is published as a numpy scalar.
            value = np.array(value, order="C")
            setattr(self, name, value if value.ndim else value[()])
        self.n_features_in_ = int(
            arrays["components_"].shape[1] if n_features_in_ is None else n_features_in_
        )
        if feature_names_in_ is not None:
            self.feature_names_in_ = np.asarray(feature_names_in_, dtype=object)
        else:
            self.__dict__.pop("feature_names_in_", None)
        self.n_iter_ = int(n_iter)
        self.n_steps_ = int(n_steps)
        self.loss_curve_ = [float(v) for v in loss_curve]
        self.n_dead_components_ = None if n_dead is None else int(n_dead)
        self._data_scale = float(data_scale)
        for name, value in (fitted or {}).items():
            setattr(self, name, value)
        # Derived tensors, the live trainer and Adam moments of an earlier model go stale.
        self.__dict__.setdefault("_tensor_cache", {}).clear()
        self.__dict__.pop("_trainer_state", None)
        self.__dict__.pop("_live_trainer", None)
        return self

    # -- validation ------------------------------------------------------------------------
    def _validate_new_data(self, X):
        """``X`` as a float array, and the input description of a new model:
        ``n_features_in_`` and ``feature_names_in_`` are set when the model is published, so
        that a failed fit leaves the estimator as it was."""
        feature_names = _get_feature_names(X)
        X = check_array(X, dtype=[np.float64, np.float32], estimator=self, input_name="X")
        return X, {"n_features_in_": X.shape[1], "feature_names_in_": feature_names}

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
