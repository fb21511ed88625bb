"""One rank of the data-parallel tests in test_distributed.py (not a test module).

``python _distributed_worker.py MODE DATA.npy OUT_DIR``, with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT in the environment, as torchrun would set them. The rank joins a gloo process
group and fits on the memory-mapped DATA.npy; it writes what it learned to OUT_DIR/rankR.npz.

MODE: ``fit`` and ``partial_fit`` train normally; ``raise-in-step`` makes rank 1's loss raise
at its fourth step; ``raise-in-callback`` makes rank 1's callback raise after the first epoch;
``different-data`` gives rank 1 fewer rows than rank 0.
"""

import datetime
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from skmpsae import MatchingPursuitSAE
from skmpsae._train.distributed import destroy
from skmpsae._train.trainer import _Trainer

PARAMS = {
    "n_components": 16,
    "n_nonzero_coefs": 3,
    "max_iter": 3,
    "batch_size": 50,
    "random_state": 0,
    "device": "cpu",
}


def main(mode, data, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    rank = dist.get_rank()
    X = np.load(data, mmap_mode="r")

    rows_read = []  # rows of X this rank reads, per epoch
    original_batch = _Trainer._batch

    def recording_batch(self, X, start, batch_size):
        x, rows = original_batch(self, X, start, batch_size)
        if self._next_row == 0 and start == 0:
            rows_read.append(0)
        rows_read[-1] += x.shape[0]
        return x, rows

    _Trainer._batch = recording_batch
    sae = MatchingPursuitSAE(**PARAMS)
    if mode == "raise-in-step" and rank == 1:
        make_module = sae._make_module
        calls = []

        def failing_module(**kwargs):
            module = make_module(**kwargs)
            loss = module.loss

            def failing_loss(*args):
                calls.append(1)
                if len(calls) == 4:
                    raise RuntimeError("injected failure on rank 1")
                return loss(*args)

            module.loss = failing_loss
            return module

        sae._make_module = failing_module
    if mode == "raise-in-callback" and rank == 1:

        def callback(info):
            raise RuntimeError("injected failure in rank 1's callback")

        sae.set_params(callback=callback)
    if mode == "different-data" and rank == 1:
        X = X[:500]
    if mode == "partial_fit":
        sae.partial_fit(X)
        sae.partial_fit(X[:120])
    else:
        sae.fit(X)
    np.savez(
        os.path.join(out_dir, f"rank{rank}.npz"),
        components=sae.components_,
        intercept=sae.intercept_,
        loss_curve=np.asarray(sae.loss_curve_),
        n_steps=sae.n_steps_,
        n_dead=sae.n_dead_components_,
        rows_read=np.asarray(rows_read),
    )
    # A barrier before leaving: a rank that tears gloo down while its peer still talks aborts
    # the peer (SIGABRT, 'terminate called without an active exception').
    destroy()


if __name__ == "__main__":
    main(*sys.argv[1:])
