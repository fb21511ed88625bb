"""Training orchestration shared by every SAE: building and resuming trainers, running epochs
with callbacks, early stopping, checkpoints and Ctrl-C, and publishing the fitted attributes.

It is a mixin, ``_TrainingMixin``, that ``_BaseSAE`` (``_base.py``, the scikit-learn face)
inherits, rather than plain functions taking the estimator: these steps are hooks that models
override or extend (``_MatryoshkaSAE._publish`` calls ``super()._publish``), and tests and
benchmarks call them as methods (``sae._new_trainer(X, n_steps)``); a mixin keeps every one of
those call sites, and method resolution, exactly as they were. The mixin relies on the
estimator's parameters and on ``_BaseSAE``'s hooks (``_make_module``, ``_encode``,
``_batch_size``, ``_learning_rate``, ``_shuffle_seed``, ``_derived_tensors``) and is not usable
on its own.
"""

import warnings

import numpy as np
import torch
from sklearn.utils import check_random_state

from .._train.checkpoint import state_from_arrays
from .._train.distributed import is_main_process
from .._train.progress import EpochInfo, print_epoch
from .._train.tensors import (
    _OUTLIER_RATIO,
    _TRANSFORM_CHUNK,
    _as_tensor,
    _outlier_rows,
    _rms_scale,
    _sample_rows,
    _torch_dtype,
)
from .._train.trainer import _Trainer
from .._utils import resolve_device, torch_generator
from ..metrics import explained_variance
from .module import initial_dictionary


class _TrainingMixin:
    """Trainer construction, the training loop's orchestration and publishing, for
    ``_BaseSAE``; not for direct use."""

    def _learning_rate(self):
        """Peak learning rate; "auto" is the model's ``_auto_learning_rate`` up to 256 atoms,
        scaled down as 1/sqrt(n_components) beyond (the usual rule for SAEs, which keeps the
        size of an Adam step relative to the typical gradient as the dictionary grows)."""
        if self.learning_rate == "auto":
            return self._auto_learning_rate * min(1.0, np.sqrt(256 / self.n_components))
        return self.learning_rate

    def _shuffle_seed(self):
        return check_random_state(self.random_state).randint(2**31 - 1)

    def _new_trainer(self, X, n_steps):
        """A trainer over a module initialised from a sample of ``X``; ``n_steps`` planned
        steps (None for partial_fit)."""
        device = resolve_device(self.device)
        dtype = _torch_dtype(X.dtype)
        sample, sample_rows = _sample_rows(X, check_random_state(self.random_state), 16384)
        sample = self._without_outliers(sample, sample_rows)
        scale = _rms_scale(sample)
        generator = torch_generator(self.random_state)
        module = self._make_module(X.shape[1], dtype, torch.device("cpu"))
        Xs = _as_tensor(sample, dtype, "cpu") / scale
        bias = Xs.mean(dim=0) if self.fit_intercept else torch.zeros_like(Xs[0])
        atoms = initial_dictionary(
            Xs - bias, self.n_components, self.dict_init, self._init_from_samples, generator
        )
        module.initialize(bias, atoms)
        module.to(device)
        return self._make_trainer(module, scale, n_steps, self._shuffle_seed(), X.shape[0])

    def _without_outliers(self, sample, sample_rows):
        """``sample`` less the rows far larger than the rest, with a warning naming them.

        One row of 1e30 among unit-scale data would otherwise set the data scale alone, and the
        model would fit nothing else.
        """
        outliers, ratios = _outlier_rows(sample)
        if outliers.size == 0:
            return sample
        shown = ", ".join(str(i) for i in sample_rows[outliers[:10]])
        more = f" and {outliers.size - 10} more" if outliers.size > 10 else ""
        warnings.warn(
            f"{type(self).__name__}: rows {shown}{more} of X lie over {_OUTLIER_RATIO:g} times "
            f"farther from the median sample than the median row does (up to "
            f"{float(ratios.max()):.3g} times): they would dominate the squared loss. The data "
            "scale is set without them; remove or clip them if they are errors.",
            UserWarning,
            stacklevel=2,
        )
        keep = np.ones(sample.shape[0], dtype=bool)
        keep[outliers] = False
        return sample[keep] if keep.any() else sample

    def _resume_trainer(self):
        """A trainer over the published parameters: with the Adam moments and counters
        saved when the estimator was pickled, if they belong to these parameters; else fresh."""
        device = resolve_device(self.device)
        dtype = _torch_dtype(self.components_.dtype)
        module = self._make_module(self.n_features_in_, dtype, device)
        scale = self._data_scale
        with torch.no_grad():
            for name, (attr, has_units) in self._published_params.items():
                value = torch.as_tensor(getattr(self, attr), dtype=dtype, device=device)
                getattr(module, name).copy_(value / scale if has_units else value)
        trainer = self._make_trainer(module, scale, None, 0, 1, self.n_steps_, self.n_iter_)
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

    def _train(
        self,
        X,
        trainer,
        n_epochs,
        loss_curve=(),
        new_input=None,
        checkpointer=None,
        early=(None, None),
    ):
        """Run ``n_epochs`` epochs, then publish the model and the counters; ``loss_curve``
        holds the losses of earlier epochs, ``checkpointer`` (if any) saves checkpoints and
        holds the losses of the epochs before a resumed checkpoint.

        Nothing is published unless an epoch completes: on divergence or another error the
        estimator is left as it was and the error propagates; on Ctrl-C it keeps the last
        completed epoch, with a warning. ``new_input`` (from ``_validate_new_data``) marks the
        training of a new model, None the continued training of the published one.
        ``early`` is ``(stopper, X_validation)`` with early stopping, else ``(None, None)``.
        """
        stopper, X_validation = early

        loss_curve = list(loss_curve if checkpointer is None else checkpointer.loss_curve)
        n_dead = None if checkpointer is None else checkpointer.n_dead
        # What the callback reports as the epochs of this call: all of a resumed fit's.
        total_epochs = n_epochs if checkpointer is None else self.max_iter

        def on_epoch(result):
            if checkpointer is not None:
                checkpointer.on_epoch(trainer, result.loss, result.n_dead)
            info = EpochInfo(self, trainer.epoch, total_epochs, trainer.step, *result)
            if self.verbose and is_main_process():
                print_epoch(info)
            if self.callback is not None:
                self.callback(info)
            if stopper is not None:
                score = self._validation_score(trainer, X_validation)
                return stopper.update(score, trainer.snapshot)
            return False

        on_step = None if checkpointer is None else checkpointer.on_step
        try:
            results = trainer.run(X, self._batch_size(), n_epochs, on_epoch, on_step)
        except KeyboardInterrupt:
            self._discard(trainer)
            if new_input is not None:
                raise  # a new model with no completed epoch: nothing to keep
            warnings.warn(
                f"Training interrupted; {type(self).__name__} keeps the model it had before "
                f"this call ({self.n_iter_} epochs in all).",
                UserWarning,
                stacklevel=2,
            )
            return
        except BaseException:
            self._discard(trainer)
            raise
        loss_curve += [result.loss for result in results]
        if stopper is not None:
            # The best epoch's parameters; the counters keep the epochs and steps run.
            step, epoch = trainer.step, trainer.epoch
            trainer.rollback(stopper.best_state)
            trainer.step, trainer.epoch = step, epoch
        if results:
            n_dead = results[-1].n_dead
        self._publish(trainer, loss_curve, n_dead, new_input)
        self.validation_scores_ = None if stopper is None else list(stopper.scores)
        self.best_validation_score_ = None if stopper is None else stopper.best_score

    def _validation_score(self, trainer, X_validation):
        """Held-out R2 of the module being trained, encoded as ``transform`` would."""
        params = {}
        for name, (attr, has_units) in self._published_params.items():
            value = getattr(trainer.module, name).detach()
            params[attr] = value * trainer.scale if has_units else value
        params.update(self._derived_tensors(params))
        X_hat = np.empty_like(X_validation)
        with torch.no_grad():
            for start in range(0, X_validation.shape[0], _TRANSFORM_CHUNK):
                chunk = _as_tensor(
                    X_validation[start : start + _TRANSFORM_CHUNK], trainer.dtype, trainer.device
                )
                codes = self._encode(chunk, params)
                recon = codes @ params["components_"] + params["intercept_"]
                X_hat[start : start + chunk.shape[0]] = recon.cpu().numpy()
        return explained_variance(X_validation, X_hat)

    def _discard(self, trainer):
        # A live trainer that a failed call has half-updated must not be trained further:
        # the next partial_fit rebuilds one from the published arrays.
        if getattr(self, "_trainer", None) is trainer:
            self._trainer = None

    def _publish(self, trainer, loss_curve, n_dead, new_input):
        if new_input is not None:
            self.n_features_in_ = new_input["n_features_in_"]
            if new_input["feature_names_in_"] is not None:
                self.feature_names_in_ = new_input["feature_names_in_"]
            else:
                self.__dict__.pop("feature_names_in_", None)
        np_dtype = np.float32 if trainer.dtype == torch.float32 else np.float64
        for name, (attr, has_units) in self._published_params.items():
            value = getattr(trainer.module, name).detach().cpu().numpy().astype(np_dtype, copy=True)
            setattr(self, attr, value * trainer.scale if has_units else value)
        self.n_iter_ = trainer.epoch
        self.n_steps_ = trainer.step
        self.loss_curve_ = loss_curve
        self.n_dead_components_ = n_dead
        self._data_scale = trainer.scale
        self._tensor_cache = {}
        self.__dict__.pop("_trainer_state", None)  # Adam moments of an earlier model
        trainer.published = self.components_
        self._trainer = trainer
