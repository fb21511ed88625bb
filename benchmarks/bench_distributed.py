"""Data-parallel training on one machine, and what a checkpoint costs.

One epoch of ``MatchingPursuitSAE`` (4,096 atoms, k=32, batches of 256) on a memory-mapped
float32 file of random Gaussian rows (50,000 x 768 by default), run two ways on the same
cores: one process with two torch threads, and two gloo processes with one thread each started
by ``torch.distributed.run`` (each rank reads half of every batch; one all-reduce per step).
Time: the epoch's wall-clock seconds as the fit's callback reports them (process start-up,
imports and the initialisation sample excluded), the two ways alternating, best of
``--repeats``. Then the checkpoint: seconds to take the trainer's state and write it
atomically (``torch.save``, fsync, rename), median of 5, and its size, against the step time.

Writes the tables ``distributed`` and ``distributed-checkpoint`` of ``docs/distributed.md``
(``--no-write`` only prints them). Run: ``PYTHONPATH=. .venv/bin/python
benchmarks/bench_distributed.py`` (about 6 minutes with the defaults; ``--rows 10000`` for a
quicker look).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import markdown_table, write_table

N_COMPONENTS, K, BATCH, N_FEATURES = 4096, 32, 256, 768
VARIANTS = ("1 process x 2 threads", "2 processes x 1 thread (gloo)")
REPO = Path(__file__).resolve().parent.parent


def _estimator():
    from skmpsae import MatchingPursuitSAE

    return MatchingPursuitSAE(
        n_components=N_COMPONENTS,
        n_nonzero_coefs=K,
        batch_size=BATCH,
        max_iter=1,
        random_state=0,
        device="cpu",
    )


def worker(data, result):
    """One fit of one epoch (under torchrun: one rank of it); rank 0 writes the result."""
    import torch
    import torch.distributed as dist

    from skmpsae._train.distributed import destroy

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    epochs = []
    sae = _estimator().set_params(callback=epochs.append)
    sae.fit(np.load(data, mmap_mode="r"))
    if not dist.is_initialized() or dist.get_rank() == 0:
        Path(result).write_text(
            json.dumps(
                {
                    "seconds": epochs[-1].seconds,
                    "steps": sae.n_steps_,
                    "threads": torch.get_num_threads(),
                    "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                    "loss": sae.loss_curve_[-1],
                }
            )
        )
    # destroy() waits at a barrier first: a rank that tears gloo down while its peer still
    # talks aborts that peer (SIGABRT, as the test worker found).
    destroy()


def _run(variant, data, result):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    script = [str(Path(__file__).resolve()), "--worker", str(data), str(result)]
    if variant == VARIANTS[0]:
        env["OMP_NUM_THREADS"] = "2"
        command = [sys.executable, *script]
    else:
        env["OMP_NUM_THREADS"] = "1"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            *script,
        ]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(Path(result).read_text())


def checkpoint_cost(data, directory):
    """Seconds and bytes of one checkpoint of the model being trained, and the step time."""
    import torch

    from skmpsae._models.session import TrainingSession
    from skmpsae._train.checkpoint import _Checkpointer, run_description

    torch.set_num_threads(1)
    X = np.load(data, mmap_mode="r")
    sae = _estimator()
    trainer = TrainingSession(sae, learning_rate=sae._learning_rate()).new_trainer(X, n_steps=100)
    trainer._order = trainer.order_rng.permutation(X.shape[0])
    steps = []
    for i in range(4):
        x, rows = trainer._batch(X, i * BATCH, BATCH)
        tic = time.perf_counter()
        trainer.train_step(x, rows)
        steps.append(time.perf_counter() - tic)
        trainer._next_row = (i + 1) * BATCH
    checkpointer = _Checkpointer.from_fit_args(
        run_description(type(sae).__name__, sae.get_params(deep=False), X), directory, 1, False
    )
    saves = []
    for _ in range(5):
        tic = time.perf_counter()
        checkpointer.save(trainer)
        saves.append(time.perf_counter() - tic)
    size = (Path(directory) / "checkpoint.pt").stat().st_size
    return float(np.median(saves)), size, float(np.median(steps[1:]))


def epoch_table(runs, n_rows, repeats):
    """The epoch times: ``runs`` maps each configuration to its results, in the order run."""
    rows = []
    for variant, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        rows.append(
            {
                "configuration": variant,
                **best,
                "ms_per_step": best["seconds"] / best["steps"] * 1000,
                "runs": ", ".join(f"{r['seconds']:.1f}" for r in results),
            }
        )
    for row in rows:
        row["relative"] = row["seconds"] / rows[0]["seconds"]
    caption = (
        f"One epoch of MatchingPursuitSAE ({N_COMPONENTS:,} atoms, k={K}, batches of "
        f"{BATCH}) on a {n_rows:,} x {N_FEATURES} float32 memmap of Gaussian rows: "
        f"{rows[0]['steps']} steps. The configurations alternate; best of {repeats}."
    )
    return (
        caption
        + "\n\n"
        + markdown_table(
            rows,
            [
                ("configuration", "configuration", ""),
                ("seconds", f"epoch (s), best of {repeats}", ".1f"),
                ("ms_per_step", "ms / step", ".0f"),
                ("relative", f"time relative to {rows[0]['configuration']}", ".1f"),
                ("runs", "each run (s)", ""),
                ("loss", "final loss", ".5f"),
            ],
        )
    )


def checkpoint_table(seconds, size, step):
    """What a checkpoint costs: ``seconds`` and ``size`` (bytes) of one, against ``step``, the
    seconds of one training step."""
    import inspect

    from skmpsae import MatchingPursuitSAE

    # fit's default interval (the CLI's --checkpoint-every default is the same).
    every = inspect.signature(MatchingPursuitSAE.fit).parameters["checkpoint_every"].default
    return markdown_table(
        [
            {
                "ms": seconds * 1000,
                "mib": size / 2**20,
                "step_ms": step * 1000,
                "every_default": seconds / (every * step),
                "every_step": seconds / step,
            }
        ],
        [
            ("ms", "one checkpoint, median of 5 (ms)", ".0f"),
            ("mib", "size (MiB)", ".1f"),
            ("step_ms", "one training step, 1 thread (ms)", ".0f"),
            ("every_default", f"added time, one every {every:,} steps (the default)", ".2%"),
            ("every_step", "added time, one every step", ".0%"),
        ],
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--no-write", action="store_true", help="print the tables without writing them into docs/"
    )
    p.add_argument("--worker", nargs=2, metavar=("DATA", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npy"
        rng = np.random.RandomState(0)
        X = np.lib.format.open_memmap(
            data, mode="w+", dtype=np.float32, shape=(args.rows, N_FEATURES)
        )
        for start in range(0, args.rows, 10_000):
            stop = min(start + 10_000, args.rows)
            X[start:stop] = rng.randn(stop - start, N_FEATURES)
        X.flush()
        del X
        runs = {variant: [] for variant in VARIANTS}
        for repeat in range(args.repeats):
            for variant in VARIANTS:  # alternating, so that load changes hit both
                out = _run(variant, data, Path(tmp) / "result.json")
                print(f"repeat {repeat}: {variant}: {out}", flush=True)
                runs[variant].append(out)
        epochs = epoch_table(runs, args.rows, args.repeats)
        checkpoint = checkpoint_table(*checkpoint_cost(data, Path(tmp) / "ckpt"))
    print(f"\n{epochs}\n\n{checkpoint}")
    if not args.no_write:
        write_table("distributed", epochs, page="distributed.md")
        write_table("distributed-checkpoint", checkpoint, page="distributed.md")


if __name__ == "__main__":
    main()
