"""One training call of an estimator: the trainer it runs, its epochs, and what it publishes.

A :class:`TrainingSession` builds the call's :class:`~skmpsae._train.trainer._Trainer` (new
from the data, going on from the published model, or restored from a checkpoint), runs it
through :func:`~skmpsae._train.loop.train_epochs`, decides what an interruption keeps, and
publishes the result through :func:`~skmpsae._models.fitted.set_fitted_state`. The estimator
keeps the scikit-learn surface; it reaches its training through this object only.
"""

import warnings
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.utils import check_random_state

from .._train.checkpoint import _Checkpointer, state_as_arrays, state_from_arrays
from .._train.contracts import SAEModule
from .._train.distributed import is_main_process
from .._train.early_stopping import _EarlyStopping, _RowSubset
from .._train.loop import TrainingResult, train_epochs
from .._train.progress import epoch_reporter
from .._train.tensors import _torch_dtype
from .._train.trainer import _Trainer
from .._utils import resolve_device
from .fitted import published_arrays, set_fitted_state
from .training import initialize_module, load_published, module_arrays, validation_score

# Training rows: an array (a memmap is read batch by batch) or early stopping's training part.
Rows = np.ndarray | _RowSubset


class InputDescription(NamedTuple):
    """What a fitted model records of its input: published with the model, not before, so
    that a failed fit leaves the estimator as it was."""

    n_features_in_: int
    feature_names_in_: np.ndarray | None


class LiveTrainer(NamedTuple):
    """The trainer of the last training call and the ``components_`` it published: the next
    ``partial_fit`` goes on with it (Adam's moments included) while they are still published."""

    trainer: _Trainer
    components: np.ndarray


def portable_state(estimator: Any, state: dict) -> dict:
    """The pickled ``state`` of ``estimator`` (a copy of its ``__dict__``) with no torch object:
    those are tied to a device and a torch version, so the live trainer travels as its
    ``state_dict`` in numpy arrays, and ``partial_fit`` after unpickling continues with its Adam
    moments."""
    live = state.pop("_live_trainer", None)
    state.pop("_tensor_cache", None)
    if live is not None and live.components is estimator.components_:
        state["_trainer_state"] = state_as_arrays(live.trainer.state_dict())
    return state


def _shuffle_seed(random_state) -> int:
    """The seed of a new trainer's data order, drawn from ``random_state``."""
    return check_random_state(random_state).randint(2**31 - 1)


class TrainingSession:
    """The training machinery of one estimator, for one call.

    Parameters
    ----------
    estimator : _BaseSAE
        The estimator trained: its parameters, and the hooks of its model file
        (``_make_module``, ``_batch_size``, ``_encode``, ``_fitted_extras``...) say what to
        build. The session writes its fitted state through
        :func:`~skmpsae._models.fitted.set_fitted_state` only, and its live trainer as
        ``_live_trainer``.
    learning_rate : float
        The peak learning rate (the estimator's rule for "auto" applied).
    """

    def __init__(self, estimator: Any, *, learning_rate: float) -> None:
        self.estimator = estimator
        self.learning_rate = learning_rate

    # -- the trainer: new, going on, or restored ----------------------------------------------
    def new_trainer(self, X: Rows, *, n_steps: int | None) -> _Trainer:
        """A trainer over a new module started from a sample of ``X``, with ``n_steps``
        planned steps (None for ``partial_fit``). Tests build one to drive it step by step."""
        est = self.estimator
        module = est._make_module(
            n_features=X.shape[1], dtype=_torch_dtype(X.dtype), device=torch.device("cpu")
        )
        scale = initialize_module(
            module,
            X,
            fit_intercept=est.fit_intercept,
            dict_init=est.dict_init,
            init_from_samples=est._init_from_samples,
            random_state=est.random_state,
            name=type(est).__name__,
        )
        module.to(resolve_device(est.device))
        return self._make_trainer(
            module,
            scale=scale,
            n_steps=n_steps,
            shuffle_seed=_shuffle_seed(est.random_state),
            dead_window=X.shape[0],
        )

    def continued_trainer(self, X: np.ndarray, *, n_steps: int | None = None) -> _Trainer:
        """The trainer of a ``partial_fit`` call on a fitted estimator, prepared for ``X``:
        the live one if it trained the published model, else one rebuilt from it. ``n_steps``:
        the steps of the whole run when a caller knows them (the learning rate then decays as
        in a fit), else None (warm-up, then constant)."""
        est = self.estimator
        live = est.__dict__.get("_live_trainer")
        if live is not None and live.components is est.components_:
            trainer = live.trainer
        else:
            trainer = self._published_trainer()
        # Reproducible shuffles that still differ from one partial_fit call to the next.
        seed = (_shuffle_seed(est.random_state) + est.n_iter_) % (2**31 - 1)
        trainer.start_call(
            learning_rate=self.learning_rate,
            n_steps=n_steps,
            shuffle_seed=seed,
            dead_window=X.shape[0],
        )
        return trainer

    def _published_trainer(self) -> _Trainer:
        """A trainer over the published parameters, with the Adam moments and counters saved
        when the estimator was pickled if they belong to these parameters; else fresh."""
        est = self.estimator
        dtype = _torch_dtype(est.components_.dtype)
        module = est._make_module(
            n_features=est.n_features_in_, dtype=dtype, device=resolve_device(est.device)
        )
        load_published(module, published_arrays(est), est._published_params, est._data_scale)
        trainer = self._make_trainer(
            module,
            scale=est._data_scale,
            n_steps=None,
            shuffle_seed=0,
            dead_window=1,
            step=est.n_steps_,
            epoch=est.n_iter_,
        )
        state = getattr(est, "_trainer_state", None)
        if state is not None and np.array_equal(
            state["module"]["dictionary"]["__tensor__"], est.components_
        ):
            trainer.load_state_dict(state_from_arrays(state))
        return trainer

    def checkpointed_trainer(
        self, X: Rows, *, checkpointer: _Checkpointer, n_steps: int
    ) -> _Trainer:
        """A trainer restored from ``checkpointer``'s checkpoint, for ``fit(..., resume=True)``."""
        est = self.estimator
        state = checkpointer.resume()
        module = est._make_module(
            n_features=X.shape[1], dtype=_torch_dtype(X.dtype), device=torch.device("cpu")
        )
        module.to(resolve_device(est.device))
        trainer = self._make_trainer(
            module, scale=state["scale"], n_steps=n_steps, shuffle_seed=0, dead_window=X.shape[0]
        )
        trainer.load_state_dict(state)
        return trainer

    def _make_trainer(
        self,
        module: SAEModule,
        *,
        scale: float,
        n_steps: int | None,
        shuffle_seed: int,
        dead_window: int,
        step: int = 0,
        epoch: int = 0,
    ) -> _Trainer:
        est = self.estimator
        return _Trainer(
            module,
            learning_rate=self.learning_rate,
            n_steps=n_steps,
            scale=scale,
            shuffle_seed=shuffle_seed,
            dead_window=dead_window,
            step=step,
            epoch=epoch,
            name=type(est).__name__,
        )

    # -- running and publishing ------------------------------------------------------------
    def run(
        self,
        X: Rows,
        trainer: _Trainer,
        *,
        n_epochs: int,
        inputs: InputDescription,
        new_model: bool,
        checkpointer: _Checkpointer | None = None,
        X_validation: np.ndarray | None = None,
    ) -> None:
        """Run ``n_epochs`` epochs of ``trainer`` on ``X`` and publish the result, with
        ``inputs`` as the model's input description.

        Nothing is published unless an epoch completes: on divergence or another error the
        estimator is left as it was and the error propagates. Ctrl-C is handled here, once: it
        keeps the last completed epoch with a warning; before one completes, a ``new_model``
        re-raises it and a published model being trained further is kept as it was, with a
        warning.
        """
        est = self.estimator
        # What the callback reports as the epochs of this call: all of a resumed fit's.
        total_epochs = n_epochs if checkpointer is None else est.max_iter
        report = epoch_reporter(
            est,
            n_epochs=total_epochs,
            verbose=est.verbose,
            callback=est.callback,
            main_process=is_main_process(),
        )
        early_stopping = None
        if X_validation is not None:
            score = partial(
                validation_score,
                X_validation=X_validation,
                encode=est._encode,
                derive=est._derived_tensors,
                published_params=est._published_params,
            )
            early_stopping = (_EarlyStopping(est.n_iter_no_change, est.tol), score)
        previous = [] if new_model else getattr(est, "loss_curve_", [])
        try:
            result = train_epochs(
                trainer,
                X,
                n_epochs,
                batch_size=est._batch_size(),
                loss_curve=previous,
                n_dead=getattr(est, "n_dead_components_", None),
                report=report,
                checkpointer=checkpointer,
                early_stopping=early_stopping,
            )
        except BaseException:
            self._forget(trainer)
            raise
        if result.interrupted and result.n_epochs == 0:
            self._forget(trainer)
            if new_model:
                raise KeyboardInterrupt  # a new model with no completed epoch: nothing to keep
            warnings.warn(
                f"Training interrupted; {type(est).__name__} keeps the model it had before "
                f"this call ({est.n_iter_} epochs in all).",
                UserWarning,
                stacklevel=3,
            )
            return
        if result.interrupted:
            warnings.warn(
                f"Training interrupted; {type(est).__name__} keeps the model of the last "
                f"completed epoch ({trainer.epoch} epochs in all).",
                UserWarning,
                stacklevel=3,
            )
        self._publish(trainer, result, inputs=inputs, new_model=new_model)

    def _forget(self, trainer: _Trainer) -> None:
        # A live trainer that a failed call has half-updated must not be trained further:
        # the next partial_fit rebuilds one from the published arrays.
        live = self.estimator.__dict__.get("_live_trainer")
        if live is not None and live.trainer is trainer:
            del self.estimator._live_trainer

    def _publish(
        self,
        trainer: _Trainer,
        result: TrainingResult,
        *,
        inputs: InputDescription,
        new_model: bool,
    ) -> None:
        """Publish what a completed training call learned, and keep its trainer live for the
        next ``partial_fit``."""
        est = self.estimator
        set_fitted_state(
            est,
            module_arrays(trainer.module, est._published_params, trainer.scale),
            n_features_in_=inputs.n_features_in_,
            feature_names_in_=inputs.feature_names_in_,
            n_iter=trainer.epoch,
            n_steps=trainer.step,
            loss_curve=result.loss_curve,
            n_dead=result.n_dead,
            data_scale=trainer.scale,
            reset=new_model,
            fitted={
                "validation_scores_": result.validation_scores,
                "best_validation_score_": result.best_validation_score,
                **est._fitted_extras(trainer.module),
            },
        )
        est._live_trainer = LiveTrainer(trainer, est.components_)
