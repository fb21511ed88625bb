"""Everything measured on one CUDA GPU, in one command and one table (under 8 minutes on an H100).

Two parts, each a group of rows of the same table:

* **cost** (issue 29): MP-SAE, TopK, BatchTopK and Matryoshka at 4,096 and 16,384 atoms
  (d=768, k=32, 16,384 activation-like training rows and 2,048 held out, 3 epochs), each at
  its default batch, as ``bench_cost.py`` measures them on the CPU: best epoch after the first,
  transform time of the held-out rows, best held-out R2, and each against TopK.
* **stream** (issue 9): one epoch over ``--rows`` activation-like rows (default 131,072, 0.4 GB)
  streamed from a ``.npy`` memory map at 65,536 atoms, k=64: ``MatchingPursuitSAE`` in full
  precision and with ``selection_dtype="bfloat16"`` (``--cache-size``, default 32,768 MiB,
  holds the whole 16 GiB Gram matrix), and ``TopKSAE`` at batch 4,096 as the reference
  throughput; rows per second, the projected minutes for 10M rows (MP-SAE's goal: under 10 on
  one H100), peak GPU memory and held-out R2 on 8,192 rows. Each model is warmed up on 8,192
  rows first (CUDA context, kernels).

Without CUDA the script says so and exits with status 0, unless ``--tiny``: then both parts run
at toy sizes on the CPU in seconds (the test suite's smoke run of this script). Prints its
table; writes nothing into the docs (the first GPU run's table is to be pasted by hand into
``docs/performance.md``, "Accelerators", with the device name it prints).

Run: ``python benchmarks/bench_gpu.py`` (``--parts cost`` or ``--parts stream`` for one part).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import activation_like, limit_threads, markdown_table, parser, write_npy
from bench_cost import ESTIMATORS, measure, with_ratios

SIZES = {
    "full": {"cost_sizes": (4096, 16384), "cost_rows": 16384, "cost_test": 2048, "d": 768,
             "cost_k": 32, "epochs": 3, "stream_K": 65536, "stream_k": 64, "test": 8192,
             "warm": 8192},
    "tiny": {"cost_sizes": (64, 128), "cost_rows": 512, "cost_test": 128, "d": 32,
             "cost_k": 4, "epochs": 2, "stream_K": 256, "stream_k": 8, "test": 128,
             "warm": 256},
}  # fmt: skip


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cost_part(sizes, device):
    """Issue 29's side-by-side comparison on ``device`` (see ``bench_cost.py``)."""
    n = sizes["cost_rows"] + sizes["cost_test"]
    X = np.concatenate(list(activation_like(n, sizes["d"], n_true=4 * max(sizes["cost_sizes"]))))
    rows = []
    for K in sizes["cost_sizes"]:
        mine = []
        for name in ESTIMATORS:
            row = measure(
                name, K, sizes["cost_k"], X, sizes["cost_test"], sizes["epochs"], device.type
            )
            mine.append(row)
            print(f"cost K={K} {row['estimator']}: {row['epoch']:.3f} s/epoch", flush=True)
        with_ratios(mine)
        for row in mine:
            row.update(
                part="cost",
                model=row["estimator"],
                k=sizes["cost_k"],
                rows=sizes["cost_rows"],
                seconds=row["epoch"],
                rows_per_s=sizes["cost_rows"] / row["epoch"],
            )
        rows += mine
    return rows


def stream_part(sizes, device, n_rows, cache_size, tmpdir):
    """One epoch streamed from a memory map at 65,536 atoms: MP-SAE against TopK."""
    from skmpsae import MatchingPursuitSAE, TopKSAE

    K, k = sizes["stream_K"], sizes["stream_k"]
    common = {
        "n_components": K,
        "n_nonzero_coefs": k,
        "max_iter": 1,
        "random_state": 0,
        "device": device.type,
    }
    models = [
        ("MP, float32", lambda: MatchingPursuitSAE(**common, cache_size=cache_size)),
        (
            "MP, bfloat16 selection",
            lambda: MatchingPursuitSAE(**common, cache_size=cache_size, selection_dtype="bfloat16"),
        ),
        ("TopK (batch 4,096)", lambda: TopKSAE(**common, batch_size=4096)),
    ]
    if device.type == "cpu":
        models.pop(1)  # half-precision GEMMs on a CPU are far slower: nothing to learn
    rows = []
    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        path = write_npy(os.path.join(tmp, "acts.npy"), n_rows + sizes["test"], sizes["d"])
        data = np.load(path, mmap_mode="r")
        X, X_test = data[:n_rows], np.asarray(data[n_rows:])
        for name, make in models:
            make().set_params(max_iter=1).fit(np.asarray(X[: sizes["warm"]]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            model = make()
            synchronize(device)
            tic = time.perf_counter()
            model.fit(X)
            synchronize(device)
            seconds = time.perf_counter() - tic
            tic = time.perf_counter()
            model.transform(X_test)
            transform = time.perf_counter() - tic
            peak = None
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**30
            row = {
                "part": "stream",
                "model": name,
                "K": K,
                "k": k,
                "rows": n_rows,
                "batch": model._batch_size(),
                "seconds": seconds,
                "rows_per_s": n_rows / seconds,
                "ten_million_min": 1e7 / (n_rows / seconds) / 60,
                "transform": transform,
                "peak_gb": peak,
                "r2": model.score(X_test),
            }
            print(f"stream {name}: {row['rows_per_s']:,.0f} rows/s", flush=True)
            rows.append(row)
    return rows


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--parts", default="cost,stream", help="comma-separated: cost, stream")
    p.add_argument("--rows", type=int, default=131_072, help="streamed rows (default 131,072)")
    p.add_argument("--cache-size", type=float, default=32768)
    p.add_argument("--tmpdir", default=tempfile.gettempdir())
    p.add_argument("--tiny", action="store_true", help="toy sizes, on the CPU if no GPU")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print("No CUDA device: the GPU benchmark is skipped (nothing measured).")
        return 0
    limit_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = SIZES["tiny" if args.tiny else "full"]
    n_rows = 2048 if args.tiny else args.rows
    parts = {part.strip() for part in args.parts.split(",")}
    unknown = parts - {"cost", "stream"}
    if unknown:
        p.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    tic = time.perf_counter()
    rows = []
    if "cost" in parts:
        rows += cost_part(sizes, device)
    if "stream" in parts:
        rows += stream_part(sizes, device, n_rows, args.cache_size, args.tmpdir)
    print(
        f"\n{name}, torch {torch.__version__}, float32 weights; {time.perf_counter() - tic:.0f} s "
        "in all. cost: activation-like rows, each SAE at its default batch, best epoch after "
        "the first, transform of the held-out rows (ratios against TopK of the same size); "
        "stream: one epoch from a .npy memory map."
    )
    table = markdown_table(
        rows,
        [
            ("part", "part", ""),
            ("model", "model", ""),
            ("K", "atoms", ""),
            ("k", "k", ""),
            ("batch", "batch", ""),
            ("rows", "rows", ","),
            ("seconds", "epoch (s)", ".2f"),
            ("fit_ratio", "epoch / TopK", ".2f"),
            ("rows_per_s", "rows/s", ",.0f"),
            ("ten_million_min", "10M rows (min)", ".1f"),
            ("transform", "transform (s)", ".3f"),
            ("transform_ratio", "transform / TopK", ".2f"),
            ("peak_gb", "peak GPU memory (GiB)", ".1f"),
            ("r2", "held-out R2", ".3f"),
        ],
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
