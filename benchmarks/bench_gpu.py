"""Training throughput on one CUDA GPU at 65,536 atoms, k=64, 768 features, 1M streamed rows.

Writes 1,000,000 activation-like rows x 768 float32 features (``_common.activation_like``,
2.9 GB) to a ``.npy`` file in ``--tmpdir`` and trains one epoch from its memory map with

* ``MatchingPursuitSAE(n_components=65536, n_nonzero_coefs=64, device="cuda")``, full
  precision and with ``selection_dtype="bfloat16"`` (``cache_size`` large enough for the
  whole 16 GiB Gram matrix: ``--cache-size``, default 32,768 MiB);
* ``TopKSAE`` at the same size and k, as the reference throughput of a one-layer encoder.

For each: rows per second, the projected time for 10M rows (the goal for MP-SAE: under 10
minutes on one H100), the peak GPU memory (``torch.cuda.max_memory_allocated``) and the
held-out R2 on 20,000 rows. Each model is warmed up on 8,192 rows first (CUDA context,
kernels). Without CUDA the script says so and exits with status 0.

Run: ``python benchmarks/bench_gpu.py`` (about 15 minutes on an H100, most of it writing the
file); ``--rows 100000`` for a quicker look.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, parser, write_npy

K, k, D_IN = 65536, 64, 768


def run(name, make, X, X_test):
    torch.cuda.synchronize()
    make().set_params(max_iter=1).fit(np.asarray(X[:8192]))  # warm-up
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = make()
    torch.cuda.synchronize()
    tic = time.perf_counter()
    model.fit(X)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    rows_per_s = X.shape[0] / seconds
    row = {
        "model": name,
        "seconds": seconds,
        "rows_per_s": rows_per_s,
        "ten_million_min": 1e7 / rows_per_s / 60,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
        "r2": model.score(X_test),
    }
    print(row, flush=True)
    return row


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cache-size", type=float, default=32768)
    p.add_argument("--tmpdir", default=tempfile.gettempdir())
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("No CUDA device: the GPU benchmark is skipped (nothing measured).")
        return 0
    from skmpsae import MatchingPursuitSAE, TopKSAE

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path = write_npy(os.path.join(tmp, "acts.npy"), args.rows + 20_000, D_IN)
        data = np.load(path, mmap_mode="r")
        X, X_test = data[: args.rows], np.asarray(data[args.rows :])
        common = {
            "n_components": K,
            "n_nonzero_coefs": k,
            "max_iter": 1,
            "random_state": 0,
            "device": "cuda",
        }
        rows = [
            run(
                "MatchingPursuitSAE, float32",
                lambda: MatchingPursuitSAE(**common, cache_size=args.cache_size),
                X,
                X_test,
            ),
            run(
                "MatchingPursuitSAE, bfloat16 selection",
                lambda: MatchingPursuitSAE(
                    **common, cache_size=args.cache_size, selection_dtype="bfloat16"
                ),
                X,
                X_test,
            ),
            run("TopKSAE (reference)", lambda: TopKSAE(**common, batch_size=4096), X, X_test),
        ]
    print(
        f"\nOne epoch, {args.rows} rows streamed from a .npy memmap, {K} atoms, k={k}, "
        f"{D_IN} features, float32 weights"
    )
    print(
        markdown_table(
            rows,
            [
                ("model", "model", ""),
                ("seconds", "epoch (s)", ".1f"),
                ("rows_per_s", "rows/s", ",.0f"),
                ("ten_million_min", "10M rows (min)", ".1f"),
                ("peak_gb", "peak GPU memory (GiB)", ".1f"),
                ("r2", "held-out R2", ".3f"),
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
