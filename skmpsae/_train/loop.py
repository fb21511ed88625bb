"""One call's training: a trainer run for some epochs, with what each epoch's end asks for.

After every completed epoch: a checkpoint (if asked for), the caller's report (verbose lines,
the user's callback) and early stopping's validation score; at the end, the return to the best
epoch's parameters when stopping early. Everything arrives as an argument and leaves in a
:class:`TrainingResult`: nothing here knows the estimator.
"""

from typing import NamedTuple


class TrainingResult(NamedTuple):
    loss_curve: list  # the losses of every completed epoch, earlier calls' included
    n_dead: int | None  # latents that fired for no sample in the last completed epoch
    n_epochs: int  # epochs completed by this call
    interrupted: bool  # stopped by Ctrl-C
    validation_scores: list | None  # one per epoch of this call, with early stopping
    best_validation_score: float | None


def train_epochs(
    trainer,
    X,
    n_epochs,
    *,
    batch_size,
    loss_curve=(),
    n_dead=None,
    report=None,
    checkpointer=None,
    early_stopping=None,
) -> TrainingResult:
    """Run ``trainer`` for ``n_epochs`` epochs over ``X``; return a :class:`TrainingResult`.

    Parameters
    ----------
    trainer : _Trainer
    X : array-like of shape (n_samples, n_features)
        Unscaled training rows (a memmap is read batch by batch).
    n_epochs : int
    batch_size : int
    loss_curve : sequence of float, default=()
        Losses of the epochs before this call (a resumed checkpoint brings its own).
    n_dead : int or None, default=None
        Dead latents after the epochs before this call.
    report : callable, default=None
        ``report(trainer, epoch_result)`` after each completed epoch.
    checkpointer : _Checkpointer, default=None
        Saves a checkpoint every few steps and at each epoch's end.
    early_stopping : (_EarlyStopping, callable), default=None
        The stopping rule and ``score(trainer)``, the validation score of the live module.
    """
    if checkpointer is not None:
        loss_curve, n_dead = checkpointer.loss_curve, checkpointer.n_dead
    loss_curve = list(loss_curve)
    stopper, score = early_stopping if early_stopping is not None else (None, None)

    every = None if checkpointer is None else (checkpointer.every, checkpointer.save)
    results, snapshot, interrupted = [], None, False
    # Ctrl-C (in an epoch or in what follows it) returns to the end of the last completed
    # epoch; before one completes, the parameters are half-updated and the caller must discard
    # the trainer. What an interruption means for the model is the caller's to say.
    try:
        for _ in range(n_epochs):
            result = trainer.run_epoch(X, batch_size, every)
            results.append(result)
            snapshot = trainer.snapshot()
            if checkpointer is not None:
                checkpointer.on_epoch(trainer.state_dict(), result.loss, result.n_dead)
            if report is not None:
                report(trainer, result)
            if (
                stopper is not None
                and score is not None
                and stopper.update(score(trainer), trainer.snapshot)
            ):
                break
    except KeyboardInterrupt:
        interrupted = True
        if snapshot is not None:
            trainer.rollback(snapshot)  # the interrupted epoch's steps are discarded
    if results:
        trainer.check_model(X, batch_size)
    if stopper is not None and stopper.best_state is not None:
        # The best epoch's parameters; the counters keep the epochs and steps run.
        trainer.rollback(stopper.best_state, counters=False)
    return TrainingResult(
        loss_curve=loss_curve + [result.loss for result in results],
        n_dead=results[-1].n_dead if results else n_dead,
        n_epochs=len(results),
        interrupted=interrupted,
        validation_scores=None if stopper is None else list(stopper.scores),
        best_validation_score=None if stopper is None else stopper.best_score,
    )
