"""Data-parallel training over a ``torch.distributed`` process group.

When a process group is initialised (e.g. the script runs under ``torchrun``), every process
(rank) trains the same model on its own share of each global batch: the ranks follow one
shared data order, rank ``r`` takes the ``r``-th of ``world_size`` near-equal slices of each
batch of ``batch_size`` rows, and one all-reduce per step sums the gradients (weighted by each
rank's share of the batch), the batch's loss, the latents' firing counts and an error flag.
Every rank therefore takes the same Adam step from the gradient of the whole batch, and ends
with the same model as one process fitting with the same ``batch_size`` and seed, up to the
order of floating-point sums.

Without a process group (or with one rank) every method here is a no-op costing nothing.
"""

import datetime
import os

import torch

# Elements of the per-step all-reduce after the gradients: the loss times the local rows, the
# error flag, then one firing count per latent.
_N_SCALARS = 2


class RankFailedError(RuntimeError):
    """Raised on every rank when another rank failed during a training step."""


def _group_initialized():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _ProcessGroup:
    """The default process group as a trainer sees it: its rank, its size and the few
    collectives training needs. ``world_size == 1`` when no group is initialised."""

    def __init__(self):
        if _group_initialized():
            self.rank = torch.distributed.get_rank()
            self.world_size = torch.distributed.get_world_size()
        else:
            self.rank, self.world_size = 0, 1

    @property
    def distributed(self):
        return self.world_size > 1

    def share(self, start, stop):
        """This rank's slice ``[lo, hi)`` of the global batch ``[start, stop)``: near-equal
        consecutive slices, the first ranks taking one more row when the sizes differ."""
        if not self.distributed:
            return start, stop
        size, extra = divmod(stop - start, self.world_size)
        lo = start + self.rank * size + min(self.rank, extra)
        return lo, lo + size + (self.rank < extra)

    def broadcast_(self, tensors):
        """Overwrite ``tensors`` (in place) with rank 0's."""
        if self.distributed:
            for tensor in tensors:
                torch.distributed.broadcast(tensor, src=0)

    def agree(self, value):
        """Rank 0's ``value`` (a Python float or int) on every rank."""
        if not self.distributed:
            return value
        buffer = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
        torch.distributed.broadcast(buffer, src=0)
        return type(value)(buffer.item())

    def check_same_rows(self, n_rows):
        """Raise ValueError on every rank unless all ranks train on ``n_rows`` rows: the ranks
        share out batches of one row order, which only works over the same data."""
        if not self.distributed:
            return
        buffer = torch.tensor([n_rows, -n_rows], dtype=torch.float64, device=_collective_device())
        torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.MAX)
        most, fewest = int(buffer[0]), -int(buffer[1])
        if most != fewest:
            raise ValueError(
                "Data-parallel training needs the same X on every rank (each rank reads its "
                f"share of every batch); the ranks got between {fewest} and {most} rows."
            )

    def sum(self, tensor):
        """The sum of ``tensor`` over the ranks (a new tensor; ``tensor`` itself on one rank)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().clone()
        torch.distributed.all_reduce(total)
        return total

    def reduce_step(self, params, local_rows, global_rows, out, error, n_components):
        """The step's one all-reduce. Replaces each parameter's gradient by the gradient of
        the whole batch's mean loss; returns the batch's mean loss and firing counts.

        ``out`` is this rank's LossOutput (None for an empty share), ``error`` the exception
        this rank hit while computing its gradients (None if it did not). If any rank had
        one, every rank raises (the failing rank its own error), so that no rank waits for a
        peer that stopped.
        """
        with_grad = [p for p in params if p.requires_grad]
        dtype, device = with_grad[0].dtype, with_grad[0].device
        contributes = out is not None and error is None
        # Each rank's mean-loss gradient, weighted by its share of the batch, sums to the
        # gradient of the batch's mean loss.
        weight = local_rows / global_rows
        pieces = [
            p.grad.flatten() * weight
            if contributes and p.grad is not None
            else torch.zeros(p.numel(), dtype=dtype, device=device)
            for p in with_grad
        ]
        if contributes and out is not None:
            scalars = torch.stack(
                [out.loss.detach() * local_rows, torch.zeros((), dtype=dtype, device=device)]
            )
            counts = out.fired.to(dtype)
        else:
            scalars = torch.tensor([0.0, float(error is not None)], dtype=dtype, device=device)
            counts = torch.zeros(n_components, dtype=dtype, device=device)
        buffer = torch.cat(pieces + [scalars.to(dtype), counts])
        torch.distributed.all_reduce(buffer)
        n_grad = buffer.numel() - _N_SCALARS - n_components
        failed = int(buffer[n_grad + 1].item())
        if error is not None:
            raise error
        if failed:
            raise RankFailedError(
                f"{failed} other process(es) of the process group failed during a training "
                "step; see their error messages."
            )
        offset = 0
        for p in with_grad:
            p.grad = buffer[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        batch_loss = buffer[n_grad] / global_rows
        batch_fired = buffer[n_grad + _N_SCALARS :].round().long()
        return batch_loss, batch_fired


def _collective_device():
    # nccl only moves CUDA tensors; gloo takes CPU ones.
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_main_process():
    """True on rank 0 of the process group, and when there is no group: the one process that
    prints progress and writes files."""
    return not _group_initialized() or torch.distributed.get_rank() == 0


def init_from_environment(device, timeout_seconds=600):
    """Initialise the default process group from torchrun's environment variables: nccl for
    a CUDA ``device`` (each worker on the GPU of its ``LOCAL_RANK``), gloo for the CPU.

    Returns the device this worker trains on. ``timeout_seconds`` bounds how long a collective
    waits for a rank that stopped answering (torchrun also stops every worker when one fails).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(
        backend, timeout=datetime.timedelta(seconds=timeout_seconds)
    )
    return device


def destroy():
    """Leave the process group once every rank has got here: a rank that tears its
    connections down while a peer still uses them can abort that peer (seen with gloo under
    torchrun: "terminate called without an active exception")."""
    if _group_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
