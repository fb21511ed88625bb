"""One rank of the data-parallel resume test in test_stream.py (not a test module).

``python _stream_worker.py MODEL_DIR CORPUS OUT_DIR``, with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT in the environment, as torchrun would set them. The rank joins a gloo process group
and trains one TopKSAE per block of the GPT-2-like model in MODEL_DIR, streamed from CORPUS,
with a checkpoint every 150 tokens: to the end into OUT_DIR/whole; then into OUT_DIR/resumed,
where every rank dies (KeyboardInterrupt, as Ctrl-C under the launcher) just after the second
checkpoint; then it resumes that run, as the same command started again with resume=True
would (in the same processes, as the single-process test does: starting two more would double
the test's time, which is the processes' start-up). Each finished run writes its rank's fitted
state to ``RUN/rankR.npz``.
"""

import datetime
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from skmpsae import TopKSAE
from skmpsae._activations import train as train_module
from skmpsae._train.distributed import destroy
from skmpsae.activations import train

SETTINGS = {
    "context_size": 16,
    "chunk_size": 64,
    "buffer_size": 200,
    "checkpoint_every": 150,
    "random_state": 3,
    "skip_special_tokens": False,  # every row: the chunk counts below are of all windows' rows
}
SAVES_BEFORE_DEATH = 2


def _train(model_dir, corpus, output_dir, resume=False):
    sae = TopKSAE(n_components=24, n_nonzero_coefs=3, batch_size=32, random_state=0)
    saes = train(model_dir, corpus, "h.*", sae, output_dir=output_dir, resume=resume, **SETTINGS)
    arrays = {}
    for h, fitted in saes.items():
        for name in ("components_", "intercept_", "loss_curve_", "n_iter_", "n_steps_"):
            arrays[f"{h}/{name}"] = np.asarray(getattr(fitted, name))
    np.savez(Path(output_dir) / f"rank{dist.get_rank()}.npz", **arrays)


def main(model_dir, corpus, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    out_dir = Path(out_dir)
    _train(model_dir, corpus, out_dir / "whole")
    save, calls = train_module._save_checkpoint, []

    def save_then_die(*args):
        save(*args)
        calls.append(1)
        if len(calls) == SAVES_BEFORE_DEATH:
            raise KeyboardInterrupt

    train_module._save_checkpoint = save_then_die
    try:
        _train(model_dir, corpus, out_dir / "resumed")
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    train_module._save_checkpoint = save
    if dist.get_rank() == 0:  # what the killed run left: its checkpoint, written by rank 0
        left = sorted(p.name for p in (out_dir / "resumed").iterdir())
        assert left == ["checkpoint.safetensors"], left
    _train(model_dir, corpus, out_dir / "resumed", resume=True)
    # A barrier before leaving: a rank that tears gloo down while its peer still talks aborts
    # the peer.
    destroy()


if __name__ == "__main__":
    main(*sys.argv[1:])
