"""The estimator base shared by every SAE: validation, the training loop, devices and seeds.

A model file supplies a torch module (its parameters and its loss) and an encoder over plain
tensors; everything a scikit-learn user touches lives here, once.

Fitted state is published as numpy arrays in the data's own units (``components_``,
``intercept_``, ...), never as pickled torch objects, so a model fitted on a GPU loads on a
CPU-only machine. Internally the module trains on ``X / scale`` with ``scale`` the data's RMS
deviation: the default learning rate then means the same thing for pixels in [0, 1], for
activations around 1e6 and for signals around 1e-6.
"""

import time
import warnings
from abc import abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._training import (
    _DIVERGED_LOSS,
    DivergenceError,
    _as_tensor,
    _n_batches,
    _rms_scale,
    _sample_rows,
    _Schedule,
    _torch_dtype,
    _Trainer,
)
from ._utils import resolve_device, torch_generator
from .metrics import explained_variance

_TRANSFORM_CHUNK = 4096


class _BaseSAE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class for the sparse autoencoders; not for direct use."""

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "fit_intercept": ["boolean"],
        "dict_init": ["array-like", None],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "verbose": ["verbose"],
    }

    # Initial atoms: random centred samples (True) or random directions (False). Measured on
    # MNIST (4k/1k, 256 atoms, k=16, 15 epochs), held-out R2: MP 0.790 from samples vs 0.746
    # from random directions; TopK 0.680 vs 0.729, as an encoder initialised to correlated
    # sample atoms starts by overshooting (initial loss 10x the data variance).
    _init_from_samples = False

    # Best peak learning rate at 256 atoms on MNIST (held-out R2 in each model's docstring).
    _auto_learning_rate = 3e-3

    # Names of module parameters -> (published attribute, whether it carries the data's units).
    _published_params = {"dictionary": ("components_", False), "bias": ("intercept_", True)}

    # -- hooks a model implements ------------------------------------------------------------
    @abstractmethod
    def _make_module(self, n_features, dtype, device):
        """Return the torch module with uninitialised parameters."""

    @abstractmethod
    def _encode(self, X, params):
        """Dense codes (n, n_components) of centred-or-not tensor ``X`` from published
        ``params`` (a dict of tensors named as ``_published_params``' attributes)."""

    def _init_module(self, module, X, generator):
        """Initialise ``module`` from a sample of scaled data ``X`` (a tensor)."""
        with torch.no_grad():
            if self.fit_intercept:
                module.bias.copy_(X.mean(dim=0))
            else:
                module.bias.zero_()
            module.dictionary.copy_(self._initial_dictionary(X - module.bias, generator))
            if hasattr(module, "encoder_weight"):
                # An encoder equal to the decoder's transpose starts as a tied autoencoder.
                module.encoder_weight.copy_(module.dictionary)

    def _initial_dictionary(self, Xc, generator):
        n_components, n_features = self.n_components, Xc.shape[1]
        if self.dict_init is not None:
            init = check_array(
                self.dict_init, dtype=[np.float64, np.float32], input_name="dict_init"
            )
            if init.shape != (n_components, n_features):
                raise ValueError(
                    f"dict_init has shape {init.shape}, expected (n_components, n_features) = "
                    f"({n_components}, {n_features})."
                )
            atoms = torch.as_tensor(init, dtype=Xc.dtype, device=Xc.device).clone()
        elif self._init_from_samples:
            # Centred training samples are atoms that already fire on the data; a little noise
            # separates repeated or identical samples.
            rows = torch.randint(Xc.shape[0], (n_components,), generator=generator)
            noise = torch.randn(n_components, n_features, generator=generator, dtype=Xc.dtype)
            atoms = Xc[rows.to(Xc.device)] + 0.05 * noise.to(Xc.device)
        else:
            atoms = torch.randn(n_components, n_features, generator=generator, dtype=Xc.dtype)
        norms = atoms.norm(dim=1, keepdim=True)
        fallback = torch.randn(atoms.shape, generator=generator, dtype=atoms.dtype).to(atoms.device)
        atoms = torch.where(norms > 1e-6 * norms.max().clamp_min(1e-30), atoms, fallback)
        return atoms / atoms.norm(dim=1, keepdim=True)

    # -- public API ------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Fit the autoencoder on ``X`` for ``max_iter`` epochs of mini-batch Adam.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. A ``numpy.memmap`` is streamed batch by batch, never copied whole.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._validate_params()
        previous = self._fitted_state()
        X = self._validate_train_data(X, reset=True)
        trainer = self._new_trainer(X)
        n_steps = self.max_iter * _n_batches(X.shape[0], self.batch_size)
        schedule = _Schedule(self._learning_rate(), n_steps)
        self._train(X, trainer, self.max_iter, schedule, previous, resume=False)
        return self

    def partial_fit(self, X, y=None):
        """Continue training on ``X`` for one pass (epoch) of mini-batches.

        The first call initialises the model from ``X``. The learning rate warms up over the
        first steps and then stays constant, since the number of future calls is unknown.
        The optimiser state lives in memory only: after pickling, training resumes with fresh
        Adam moments.

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
        first = not hasattr(self, "components_")
        if first:
            self._validate_params()
        previous = self._fitted_state()
        X = self._validate_train_data(X, reset=first)
        trainer = getattr(self, "_trainer", None)
        if first:
            trainer = self._new_trainer(X)
        elif trainer is None or trainer.published is not self.components_:
            trainer = self._resume_trainer()
        schedule = _Schedule(self._learning_rate(), None)
        self._train(X, trainer, 1, schedule, previous, resume=not first)
        return self

    def transform(self, X):
        """Encode ``X`` as sparse codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
            Codes, mostly zeros, in the dtype of ``X`` (float32 or float64).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        params = self._params_as_tensors(X.dtype)
        device = params["components_"].device
        out = np.empty((X.shape[0], self.n_components), dtype=X.dtype)
        with torch.no_grad():
            for start in range(0, X.shape[0], _TRANSFORM_CHUNK):
                chunk = _as_tensor(X[start : start + _TRANSFORM_CHUNK], None, device)
                out[start : start + chunk.shape[0]] = self._encode(chunk, params).cpu().numpy()
        return out

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
        """
        # transform validates X (feature names included); the metric needs the plain array.
        X_hat = self.inverse_transform(self.transform(X))
        return explained_variance(check_array(X, dtype=[np.float64, np.float32]), X_hat)

    def to_sparse_coder(self, **kwargs):
        """The learned dictionary as a :class:`sklearn.decomposition.SparseCoder`.

        ``SparseCoder`` has no bias: feed it ``X - intercept_``, and add ``intercept_`` back to
        ``codes @ components_``. Keyword arguments go to ``SparseCoder`` (e.g.
        ``transform_algorithm="omp", transform_n_nonzero_coefs=16``).

        Returns
        -------
        coder : sklearn.decomposition.SparseCoder
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
        state = super().__getstate__()
        # Torch state is tied to a device and a torch version: the published arrays suffice.
        for key in ("_trainer", "_tensor_cache"):
            state.pop(key, None)
        return state

    # -- validation ------------------------------------------------------------------------
    def _validate_params(self):
        super()._validate_params()
        # Python counts a bool as an int, but n_components=True is a slip, not a request for
        # one atom; without this check it fails deep inside torch with an obscure TypeError.
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            if isinstance(value, bool) and any(
                isinstance(c, Interval) and c.type is Integral for c in constraints
            ):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be an int, "
                    f"got the boolean {value!r}."
                )

    def _learning_rate(self):
        """Peak learning rate; "auto" is the model's ``_auto_learning_rate`` up to 256 atoms,
        scaled down as 1/sqrt(n_components) beyond (the usual rule for SAEs, DESIGN.md
        section 3)."""
        if self.learning_rate == "auto":
            return self._auto_learning_rate * min(1.0, np.sqrt(256 / self.n_components))
        return self.learning_rate

    def _validate_train_data(self, X, reset):
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)

    # -- training --------------------------------------------------------------------------
    def _new_trainer(self, X):
        device = resolve_device(self.device)
        dtype = _torch_dtype(X.dtype)
        sample = _sample_rows(X, check_random_state(self.random_state), 16384)
        scale = _rms_scale(sample)
        generator = torch_generator(self.random_state)
        module = self._make_module(X.shape[1], dtype, torch.device("cpu"))
        self._init_module(module, _as_tensor(sample, dtype, "cpu") / scale, generator)
        module.to(device)
        self.n_steps_ = 0
        self.n_iter_ = 0
        self.loss_curve_ = []
        return self._make_trainer(module, scale, device, dtype)

    def _resume_trainer(self):
        device = resolve_device(self.device)
        dtype = _torch_dtype(self.components_.dtype)
        module = self._make_module(self.n_features_in_, dtype, device)
        scale = self._data_scale
        with torch.no_grad():
            for name, (attr, has_units) in self._published_params.items():
                value = torch.as_tensor(getattr(self, attr), dtype=dtype, device=device)
                getattr(module, name).copy_(value / scale if has_units else value)
        return self._make_trainer(module, scale, device, dtype)

    def _make_trainer(self, module, scale, device, dtype):
        optimizer = torch.optim.Adam(module.parameters(), lr=self._learning_rate())
        trainer = _Trainer(module, optimizer, scale, device, dtype, published=None)
        self._trainer = trainer
        return trainer

    def _train(self, X, trainer, n_epochs, schedule, previous, resume):
        """Run ``n_epochs`` epochs, then publish the parameters as numpy arrays.

        On divergence the estimator gets back ``previous`` (its state before the call) and the
        error propagates; on Ctrl-C it keeps the last completed epoch, with a warning.
        """
        module, optimizer = trainer.module, trainer.optimizer
        # Reproducible shuffles that still differ from one partial_fit call to the next.
        seed = check_random_state(self.random_state).randint(2**31 - 1)
        rng = np.random.RandomState((seed + self.n_iter_) % (2**31 - 1))
        n = X.shape[0]
        trainer.total_steps = schedule.n_steps
        trainer.dead_window = n
        snapshot = self._snapshot(module) if resume else None
        snapshot_steps = getattr(self, "n_steps_", 0)
        try:
            for epoch in range(n_epochs):
                tic = time.perf_counter()
                order = rng.permutation(n)
                total = torch.zeros((), dtype=trainer.dtype, device=trainer.device)
                fired = torch.zeros(self.n_components, dtype=torch.long, device=trainer.device)
                for start in range(0, n, self.batch_size):
                    rows = np.sort(order[start : start + self.batch_size])
                    xb = _as_tensor(X[rows], trainer.dtype, trainer.device) / trainer.scale
                    trainer.step = self.n_steps_
                    for group in optimizer.param_groups:
                        group["lr"] = schedule(self.n_steps_)
                    loss, active = module.loss(xb, trainer)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    module.project_gradients()
                    optimizer.step()
                    module.normalize()
                    self.n_steps_ += 1
                    total += loss.detach() * xb.shape[0]
                    fired += active
                    trainer.samples_since_fired += xb.shape[0]
                    # masked_fill_, unlike boolean indexing, needs no host sync on a GPU.
                    trainer.samples_since_fired.masked_fill_(active > 0, 0)
                epoch_loss = float(total) / n
                # Each loss above was taken before its step: re-measure the last batch after
                # the last step, or a one-batch partial_fit could publish a blown-up model.
                with torch.no_grad():
                    last_loss = float(module.loss(xb, trainer)[0])
                worst = float(np.max([epoch_loss, last_loss]))  # NaN propagates
                if not np.isfinite(worst) or worst > _DIVERGED_LOSS:
                    raise DivergenceError(
                        f"{type(self).__name__} diverged in epoch {self.n_iter_ + 1}: the "
                        f"reconstruction loss reached {worst:.3g} (relative to the data "
                        f"variance). The learning_rate ({self._learning_rate():g}) is most likely "
                        "too large; lower it, or check the input for extreme outliers."
                    )
                snapshot = self._snapshot(module)
                snapshot_steps = self.n_steps_
                self.n_iter_ += 1
                self.loss_curve_.append(epoch_loss)
                self.n_dead_components_ = int((fired == 0).sum())
                if self.verbose:
                    print(
                        f"[{type(self).__name__}] epoch {self.n_iter_}: loss {epoch_loss:.5f}, "
                        f"dead atoms {self.n_dead_components_}/{self.n_components}, "
                        f"{time.perf_counter() - tic:.2f}s",
                        flush=True,
                    )
        except KeyboardInterrupt:
            if snapshot is None:
                self._restore(previous)
                raise
            self.n_steps_ = snapshot_steps  # the interrupted epoch's steps are discarded
            warnings.warn(
                f"Training interrupted; {type(self).__name__} keeps the model of the last "
                f"completed epoch ({self.n_iter_} epochs in all).",
                UserWarning,
            )
        except DivergenceError:
            self._restore(previous)
            raise
        self._publish(snapshot, trainer)

    def _snapshot(self, module):
        return {name: p.detach().to("cpu", copy=True) for name, p in module.named_parameters()}

    def _publish(self, snapshot, trainer):
        np_dtype = np.float32 if trainer.dtype == torch.float32 else np.float64
        for name, (attr, has_units) in self._published_params.items():
            value = snapshot[name].numpy().astype(np_dtype, copy=True)
            setattr(self, attr, value * trainer.scale if has_units else value)
        self._data_scale = trainer.scale
        self._tensor_cache = {}
        self.loss_curve_ = list(self.loss_curve_)
        # Parameters restored from a snapshot must not be trained further as if they were live.
        with torch.no_grad():
            for name, p in trainer.module.named_parameters():
                p.copy_(snapshot[name].to(p.device))
        trainer.published = self.components_

    def _fitted_state(self):
        """Copy of the fitted attributes, to put back if a call fails half-way."""
        state = {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("__")}
        if "loss_curve_" in state:
            state["loss_curve_"] = list(state["loss_curve_"])
        if hasattr(self, "_data_scale"):
            state["_data_scale"] = self._data_scale
        return state

    def _restore(self, previous):
        for attr in list(vars(self)):
            if (attr.endswith("_") and not attr.startswith("__")) or attr == "_data_scale":
                delattr(self, attr)
        # The live module may hold half-updated parameters: resume from the arrays instead.
        self._trainer = None
        for key, value in previous.items():
            setattr(self, key, value)

    # -- encoding helpers ------------------------------------------------------------------
    def _params_as_tensors(self, np_dtype):
        """Published parameters as tensors on the device, cached until they change."""
        device = resolve_device(self.device)
        key = (np.dtype(np_dtype).str, str(device))
        attrs = [attr for attr, _ in self._published_params.values()]
        # The cache dict is created once and updated in place, so that transform never adds
        # attributes to a fitted estimator (scikit-learn's check_dict_unchanged).
        cache = self.__dict__.setdefault("_tensor_cache", {})
        # The entry is read and replaced as one tuple: concurrent transforms (e.g. one float32,
        # one float64) must never see another call's half-written entry.
        entry = cache.get("entry")
        if entry is not None and entry[0] == key and all(
            np.array_equal(entry[1][a], getattr(self, a)) for a in attrs
        ):
            return entry[2]
        tensors = {a: _as_tensor(getattr(self, a), _torch_dtype(np_dtype), device) for a in attrs}
        tensors.update(self._derived_tensors(tensors))
        cache["entry"] = (key, {a: getattr(self, a).copy() for a in attrs}, tensors)
        return tensors

    def _derived_tensors(self, tensors):
        """Extra tensors computed once per dictionary (e.g. a Gram matrix)."""
        return {}
