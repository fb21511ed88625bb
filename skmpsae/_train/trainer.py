"""The training loop: one object holding exactly the state a checkpoint saves.

A :class:`_Trainer` owns the torch module, the Adam optimiser, the learning-rate schedule, the
data order and its random state, the step and epoch counters and the dead-latent counters. It
runs epochs over a (possibly memory-mapped) array; :meth:`_Trainer.train_step` is one training
step, in one place. The estimators build a trainer, run it and publish what it learned; they
never reach into the loop.
"""

import contextlib
import copy
import time
from typing import Any, NamedTuple

import numpy as np
import torch

from .._compat import EXTRA_STATE_KEY_SUFFIX
from .contracts import LossOutput, SAEModule
from .distributed import _ProcessGroup
from .reader import _epoch_order, _prefers_buffer, _read_ahead
from .tensors import _DIVERGED_LOSS, DivergenceError, _as_tensor, _batch_bounds


class _Schedule:
    """The one warm-up rule, and the learning rate built on it.

    ``warmup(step)`` rises linearly from ``1 / warmup_steps`` to 1 over the first
    ``warmup_steps`` steps: 5% of a fit's steps (at least 1, at most 100), or 50 steps when the
    number of steps is unknown (``partial_fit``). It scales the learning rate and any sparsity
    penalty (a full L1 penalty on a random start kills latents before they find data). The
    learning rate is then constant (``n_steps=None``) or decays linearly to zero over the last
    ``decay_fraction`` of the ``n_steps`` steps of a fit (the module's ``lr_decay_fraction``).
    """

    def __init__(self, learning_rate, n_steps, decay_fraction=0.2):
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.decay_fraction = decay_fraction
        self.warmup_steps = 50 if n_steps is None else max(1, min(100, n_steps // 20))

    def warmup(self, step) -> float:
        return min(1.0, (step + 1) / self.warmup_steps)

    def __call__(self, step) -> float:
        lr = self.learning_rate * self.warmup(step)
        if self.n_steps is not None:
            decay_start = (1 - self.decay_fraction) * self.n_steps
            if step >= decay_start:
                lr *= max(0.0, (self.n_steps - step) / (self.n_steps - decay_start))
        return lr


def _with_own_extra_state(module, saved) -> dict:
    """``saved`` (a module state_dict), completed with ``module``'s own extra state where it
    has none (a copy then: the caller's dict is never changed)."""
    missing = {
        key: value
        for key, value in module.state_dict().items()
        if key.endswith(EXTRA_STATE_KEY_SUFFIX) and key not in saved
    }
    return {**saved, **missing} if missing else saved


class _EpochResult(NamedTuple):
    loss: float  # mean training loss over the epoch's samples
    n_dead: int  # latents that fired for no sample in the epoch
    seconds: float


@contextlib.contextmanager
def _released(module):
    try:
        yield
    finally:
        module.release_buffers()


class _Trainer:
    """Trains ``module`` by mini-batch Adam on data divided by ``scale``.

    Parameters
    ----------
    module : SAEModule
        Initialised module, on the device training runs on.
    learning_rate : float
        Peak learning rate.
    n_steps : int or None
        Planned steps of a fit (for the decay), None for ``partial_fit``.
    scale : float
        Training runs on ``X / scale``.
    shuffle_seed : int
        Seed of the data order (see :meth:`reseed`).
    dead_window : int
        Samples without firing after which a latent counts as dead (the loss's ``dead_mask``).
    step, epoch : int, default=0
        Counters to start from (steps and epochs already taken, e.g. by earlier calls).
    name : str, default="SAE"
        Used in error messages.

    Notes
    -----
    Under an initialised ``torch.distributed`` process group the trainer is data-parallel:
    rank 0's initial parameters, scale and data order are broadcast, each rank trains on its
    share of every batch and the gradients are summed across ranks in :meth:`train_step`
    (see ``_train/distributed.py``).
    """

    def __init__(
        self,
        module: SAEModule,
        *,
        learning_rate: float,
        n_steps: int | None,
        scale: float,
        shuffle_seed: int,
        dead_window: int,
        step: int = 0,
        epoch: int = 0,
        name: str = "SAE",
    ) -> None:
        self.group = _ProcessGroup()
        # Every rank starts from rank 0's model, scale and data order (they differ when
        # random_state is None).
        self.group.broadcast_([p.detach() for p in module.parameters()])
        scale = self.group.agree(float(scale))
        self.module = module
        self.optimizer = module.make_optimizer(learning_rate)
        self.schedule = _Schedule(learning_rate, n_steps, module.lr_decay_fraction)
        self.scale = scale
        self.dtype = module.dictionary.dtype
        self.device = module.dictionary.device
        self.dead_window = dead_window
        self.step = step
        self.epoch = epoch
        self.name = name
        self.samples_since_fired = torch.zeros(
            module.dictionary.shape[0], dtype=torch.long, device=self.device
        )
        self.reseed(shuffle_seed)

    def start_call(self, *, learning_rate, n_steps, shuffle_seed, dead_window) -> None:
        """Prepare a ``fit`` or ``partial_fit`` call: its schedule (the step count goes on), its
        data order and the silence after which a latent counts as dead."""
        self.schedule = _Schedule(learning_rate, n_steps, self.module.lr_decay_fraction)
        self.dead_window = dead_window
        self.reseed(shuffle_seed)

    def reseed(self, shuffle_seed) -> None:
        """Restart the data order from ``shuffle_seed`` (rank 0's) and forget any epoch in
        progress."""
        self.order_rng = np.random.RandomState(self.group.agree(int(shuffle_seed)))
        self._end_epoch()

    def _end_epoch(self) -> None:
        self._order = None  # the current epoch's row order; None between epochs
        self._next_row = 0
        self._loss_sum = torch.zeros((), dtype=self.dtype, device=self.device)
        self._fired = torch.zeros_like(self.samples_since_fired)

    def dead_mask(self) -> torch.Tensor:
        return self.samples_since_fired >= self.dead_window

    # -- one step, one epoch -------------------------------------------------------------
    def train_step(self, x, batch_rows=None) -> LossOutput:
        """One training step on the scaled batch ``x``: forward and loss, backward, gradient
        projection, Adam step, renormalisation; then the counters. Returns the LossOutput of
        the whole batch.

        Data-parallel, ``x`` is this rank's share of a batch of ``batch_rows`` rows (default:
        ``x`` is the whole batch).
        """
        batch_rows = x.shape[0] if batch_rows is None else batch_rows
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(self.step)
        if self.group.distributed:
            out = self._all_reduced_gradients(x, batch_rows)
        else:
            out = self.module.loss(x, self.dead_mask(), self.schedule.warmup(self.step))
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
        self.module.project_gradients()
        self.optimizer.step()
        self.module.normalize()
        self.step += 1
        self.samples_since_fired += batch_rows
        # masked_fill_, unlike boolean indexing, needs no host sync on a GPU.
        self.samples_since_fired.masked_fill_(out.fired > 0, 0)
        return out

    def _all_reduced_gradients(self, x, batch_rows) -> LossOutput:
        """Data-parallel forward and backward: every parameter's gradient becomes that of the
        whole batch's mean loss (one all-reduce). Returns the whole batch's LossOutput. An
        error on any rank is raised on every rank, so that none waits for it."""
        out, error = None, None
        self.optimizer.zero_grad(set_to_none=True)
        try:
            if x.shape[0]:  # a rank's share of a short last batch can be empty
                out = self.module.loss(x, self.dead_mask(), self.schedule.warmup(self.step))
                out.loss.backward()
        except Exception as exc:
            error = exc
        loss, fired = self.group.reduce_step(
            list(self.module.parameters()),
            x.shape[0],
            batch_rows,
            out,
            error,
            self.samples_since_fired.shape[0],
        )
        return LossOutput(loss, fired)

    def _batch(self, X, start, stop) -> tuple[torch.Tensor, int]:
        """This rank's share of the batch of rows ``start:stop`` of the epoch's order, scaled,
        and the number of rows in the whole batch."""
        lo, hi = self.group.share(start, stop)
        assert self._order is not None, "a batch is read within an epoch, which sets the order"
        rows = np.sort(self._order[lo:hi])
        return _as_tensor(X[rows], self.dtype, self.device) / self.scale, stop - start

    @torch.no_grad()
    def check_model(self, X, batch_size) -> None:
        """Raise DivergenceError unless the model's loss on the first ``batch_size`` rows of
        ``X`` is finite and not exploding: the losses of an epoch are each taken before their
        step, so without this a blown-up last step (e.g. of a one-batch ``partial_fit``) would
        be published. The loss is the whole batch's on every rank, so all ranks agree."""
        stop = min(batch_size, X.shape[0])
        lo, hi = self.group.share(0, stop)
        x = _as_tensor(X[lo:hi], self.dtype, self.device) / self.scale
        local = torch.zeros((), dtype=self.dtype, device=self.device)
        if x.shape[0]:
            out = self.module.loss(x, self.dead_mask(), self.schedule.warmup(self.step))
            local = out.loss * x.shape[0]
        self._check_loss(float(self.group.sum(local)) / stop, self.epoch)

    def _check_loss(self, loss, epoch) -> None:
        if not np.isfinite(loss) or loss > _DIVERGED_LOSS:
            raise DivergenceError(
                f"{self.name} diverged in epoch {epoch}: the reconstruction loss "
                f"reached {loss:.3g} (relative to the data variance). The learning_rate "
                f"({self.schedule.learning_rate:g}) is most likely too large; lower it, or "
                "check the input for extreme outliers."
            )

    def run_epoch(self, X, batch_size, checkpoint=None) -> _EpochResult:
        """One pass over ``X`` (unscaled rows) in a fresh random order, or the rest of the pass
        in progress (after :meth:`load_state_dict` of a mid-epoch state). Data-parallel, every
        rank passes the same ``X`` and reads only its share of each batch.

        ``checkpoint``, if given, is ``(every, save)``: ``save(self.state_dict())`` after each
        step whose count is a multiple of ``every``.
        Raises DivergenceError if the epoch's loss is not finite or exploding (each loss is
        taken before its step: :meth:`check_model` checks the model after the last one);
        returns an _EpochResult.
        """
        tic = time.perf_counter()
        n = X.shape[0]
        self.group.check_same_rows(n)
        if self._order is None:
            self._order = _epoch_order(n, self.order_rng, buffered=_prefers_buffer(X))
        elif len(self._order) != n:
            raise ValueError(f"The epoch in progress covers {len(self._order)} rows, got {n}.")
        # The next batch is read and converted on a background thread during each step.
        bounds = [b for b in _batch_bounds(n, batch_size) if b[0] >= self._next_row]
        batches = _read_ahead(lambda bound: self._batch(X, *bound), bounds)
        # The buffers a module keeps between batches go at the epoch's end, also on errors.
        with contextlib.closing(batches), _released(self.module):
            for (start, _), (x, rows) in batches:
                out = self.train_step(x, rows)
                self._loss_sum += out.loss.detach() * rows
                self._fired += out.fired
                self._next_row = start + rows
                if checkpoint is not None and self.step % checkpoint[0] == 0:
                    checkpoint[1](self.state_dict())
        epoch_loss = float(self._loss_sum) / n
        self._check_loss(epoch_loss, self.epoch + 1)
        n_dead = int((self._fired == 0).sum())
        self.epoch += 1
        self._end_epoch()
        return _EpochResult(epoch_loss, n_dead, time.perf_counter() - tic)

    # -- snapshots and checkpoints -------------------------------------------------------
    def snapshot(self) -> dict:
        """The parameters (CPU copies) and counters at an epoch's end, for :meth:`rollback`."""
        params = {k: p.detach().to("cpu", copy=True) for k, p in self.module.named_parameters()}
        return {"params": params, "step": self.step, "epoch": self.epoch}

    @torch.no_grad()
    def rollback(self, snapshot, counters=True) -> None:
        """Return to ``snapshot``'s parameters and, with ``counters``, to its step and epoch
        counts (Adam's moments are kept). Early stopping keeps the counts of the epochs run."""
        for name, p in self.module.named_parameters():
            p.copy_(snapshot["params"][name].to(p.device))
        if counters:
            self.step, self.epoch = snapshot["step"], snapshot["epoch"]
        self._end_epoch()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: parameters, Adam's moments, the
        schedule and its position, the data order's random state and the position in the
        current epoch. Tensors are CPU copies; the dict pickles (``torch.save``)."""

        def cpu(tensor):
            return tensor.detach().to("cpu", copy=True)

        in_epoch = None
        if self._order is not None:
            in_epoch = {
                "order": self._order.copy(),
                "next_row": self._next_row,
                "loss_sum": cpu(self._loss_sum),
                "fired": cpu(self._fired),
            }
        optimizer = copy.deepcopy(self.optimizer.state_dict())
        for state in optimizer["state"].values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = cpu(value)
        return {
            "module": {k: cpu(v) for k, v in self.module.state_dict().items()},
            "optimizer": optimizer,
            "schedule": {
                "learning_rate": self.schedule.learning_rate,
                "n_steps": self.schedule.n_steps,
                "decay_fraction": self.schedule.decay_fraction,
            },
            "scale": self.scale,
            "step": self.step,
            "epoch": self.epoch,
            "dead_window": self.dead_window,
            "samples_since_fired": cpu(self.samples_since_fired),
            "order_rng": self.order_rng.get_state(),
            "in_epoch": in_epoch,
        }

    def load_state_dict(self, state) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a trainer of the same model).

        A module state saved before the module had extra state (matching pursuit's measured
        selection path, see ``get_extra_state``) takes the module's own, as if nothing had
        been measured: the next batches measure again. ``state`` is left as it was."""
        self.module.load_state_dict(_with_own_extra_state(self.module, state["module"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule = _Schedule(**state["schedule"])
        self.scale = state["scale"]
        self.step, self.epoch = state["step"], state["epoch"]
        self.dead_window = state["dead_window"]
        self.samples_since_fired = state["samples_since_fired"].to(self.device, copy=True)
        self.order_rng = np.random.RandomState()
        self.order_rng.set_state(state["order_rng"])
        self._end_epoch()
        in_epoch = state["in_epoch"]
        if in_epoch is not None:
            self._order = in_epoch["order"].copy()
            self._next_row = in_epoch["next_row"]
            self._loss_sum = in_epoch["loss_sum"].to(self.device, copy=True)
            self._fired = in_epoch["fired"].to(self.device, copy=True)
