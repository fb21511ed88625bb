"""Interpretability-sized dictionaries on the CPU: a 16,384-atom epoch over 100,000 memory-mapped
rows, and 65,536 atoms trained for a step and encoding 10,000 rows to sparse codes.

``epoch``: 100,000 activation-like rows x 768 features (``_common.activation_like``, float32,
307 MB) are written to a ``.npy`` file; a fresh process runs
``MatchingPursuitSAE(n_components=16384, n_nonzero_coefs=32, max_iter=1, random_state=0)
.fit(np.load(path, mmap_mode="r"))``, every other parameter at its default (``batch_size="auto"``
is 4,096 here, ``cache_size`` 2,048 MiB). Printed: the epoch's wall time; the FLOP-count lower
bound (the first correlations ``2 n d K`` that any exact selection computes, plus the Gram
entries of the distinct atoms of each batch, ``2 d (U K - U (U - 1) / 2)`` by symmetry, at the
GEMM speed measured in the same process; steps, backward pass and Adam not counted); the
peak anonymous memory above the process's baseline (the data's pages are file pages, not
counted, and are shown apart); and the file's read throughput in the training
order, from a cold page cache, against the rows per second of training.

``transform``: a fresh process fits ``MatchingPursuitSAE(n_components=65536,
n_nonzero_coefs=16, max_iter=1, sparse_output=True)`` on 4,096 rows (one training step) and
encodes 10,000 rows to a CSR matrix; printed: times, peak memory (``VmHWM``, all resident
memory) and the codes' size. A dense float32 Gram matrix would take 16 GiB, dense codes 2.6 GB.

``read``: the read throughput of a 1.4 GiB file (500,000 rows) from a cold page cache, in the
uniform order and in the mixing-buffer order that files of 1 GiB or more get.

Run: ``python benchmarks/bench_large.py --threads 2`` (about 15 minutes on 2 cores; needs
320 MB of free disk in ``--tmpdir``). ``--part epoch``, ``--part transform`` or ``--part read``
(1.5 GB of disk) runs one part.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, threading, time
import numpy as np
import torch
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
from skmpsae import MatchingPursuitSAE

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

peak = {"anon": 0}
def sample():
    while True:
        peak["anon"] = max(peak["anon"], status("RssAnon"))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

part, path = sys.argv[1], sys.argv[2]
D = torch.randn(16384, 768)
X = torch.randn(4096, 768)
X @ D.T
tic = time.perf_counter(); X @ D.T; gemm_rate = 2 * 4096 * 768 * 16384 / (time.perf_counter() - tic)
del D, X
baseline = status("RssAnon")
out = {"gemm_rate": gemm_rate, "baseline": baseline}
if part == "epoch":
    X = np.load(path, mmap_mode="r")
    distinct = []
    sae = MatchingPursuitSAE(n_components=16384, n_nonzero_coefs=32, max_iter=1,
                             random_state=0, device="cpu")
    import skmpsae._matching_pursuit as mp
    forward = mp._MatchingPursuitModule.forward
    def counting_forward(self, x):
        result = forward(self, x)
        if torch.is_grad_enabled():
            distinct.append(self.n_distinct)
        return result
    mp._MatchingPursuitModule.forward = counting_forward
    tic = time.perf_counter()
    sae.fit(X)
    out.update(seconds=time.perf_counter() - tic, distinct=distinct,
               batch_size=sae._batch_size(), loss=sae.loss_curve_[-1],
               rss_file=status("RssFile"))
else:
    X = np.load(path, mmap_mode="r")
    sae = MatchingPursuitSAE(n_components=65536, n_nonzero_coefs=16, max_iter=1,
                             sparse_output=True, random_state=0, device="cpu")
    tic = time.perf_counter()
    sae.fit(np.asarray(X[:4096]))
    out["fit_seconds"] = time.perf_counter() - tic
    rows = np.asarray(X[10_000:20_000])
    tic = time.perf_counter()
    codes = sae.transform(rows)
    out.update(transform_seconds=time.perf_counter() - tic, nnz=int(codes.nnz),
               codes_mb=(codes.data.nbytes + codes.indices.nbytes + codes.indptr.nbytes) / 2**20,
               format=codes.format, shape=list(codes.shape))
out.update(vm_hwm=status("VmHWM"), peak_anon=peak["anon"])
print("RESULT", json.dumps(out), flush=True)
"""


def run_child(part, path, threads):
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", CHILD, part, str(path)], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def read_throughput(path, batch_size, buffered=None):
    """Rows per second reading the file in a training epoch's order, from a cold cache
    (``buffered``: force the mixing-buffer order or the uniform one)."""
    import time

    import numpy as np
    from _common import drop_page_cache

    from skmpsae._reader import _epoch_order, _prefers_buffer

    X = np.load(path, mmap_mode="r")
    if buffered is None:
        buffered = _prefers_buffer(X)
    order = _epoch_order(X.shape[0], np.random.RandomState(0), buffered)
    drop_page_cache(path)
    tic = time.perf_counter()
    for start in range(0, X.shape[0], batch_size):
        np.asarray(X[np.sort(order[start : start + batch_size])])
    return X.shape[0] / (time.perf_counter() - tic)


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import drop_page_cache, parser, write_npy

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=("epoch", "transform", "read", "all"), default="all")
    p.add_argument("--tmpdir", default=tempfile.gettempdir())
    args = p.parse_args(argv)
    if args.part == "read":
        return read_orders(args.tmpdir)
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path = Path(tmp) / "activations.npy"
        write_npy(path, 100_000, 768)
        print(f"data: {path.stat().st_size / 2**20:.0f} MB; load average "
              f"{os.getloadavg()[0]:.1f}; {args.threads} thread(s)", flush=True)
        if args.part in ("epoch", "all"):
            drop_page_cache(path)
            res = run_child("epoch", path, args.threads)
            n, d, K = 100_000, 768, 16384
            first = 2 * n * d * K
            # The Gram entries a batch's selection reads: the rows of its U distinct atoms,
            # U K - U (U - 1) / 2 distinct entries by symmetry, 2 d flops each.
            rows = sum(2 * d * (U * K - U * (U - 1) / 2) for U in res["distinct"])
            rate = res["gemm_rate"]
            print(f"\n16,384 atoms, k=32, 768 features, 100,000 rows from a .npy memmap, "
                  f"defaults otherwise (batch {res['batch_size']}):")
            print(f"  epoch: {res['seconds']:.1f} s ({res['seconds'] / 60:.2f} min); "
                  f"{n / res['seconds']:.0f} rows/s; last epoch loss {res['loss']:.4f}")
            print(f"  FLOP-count lower bound at the measured {rate / 1e9:.0f} GFLOP/s: first "
                  f"correlations {first / 1e12:.2f} TFLOP ({first / rate:.1f} s) + Gram entries of "
                  f"the distinct atoms selected {rows / 1e12:.2f} TFLOP ({rows / rate:.1f} s) = "
                  f"{(first + rows) / rate:.1f} s; distinct atoms per batch "
                  f"{min(res['distinct'])}-{max(res['distinct'])}")
            print(f"  peak anonymous memory above baseline: "
                  f"{(res['peak_anon'] - res['baseline']) / 2**20:.0f} MB; data pages "
                  f"resident at the end: {res['rss_file'] / 2**20:.0f} MB; VmHWM "
                  f"{res['vm_hwm'] / 2**20:.0f} MB")
            print(f"  reading the file in the epoch's order, cold cache: "
                  f"{read_throughput(path, res['batch_size']):.0f} rows/s, against "
                  f"{n / res['seconds']:.0f} rows/s of training")
        if args.part in ("transform", "all"):
            res = run_child("transform", path, args.threads)
            print(f"\n65,536 atoms, 768 features: fit on 4,096 rows (one step, k=16) "
                  f"{res['fit_seconds']:.1f} s; transform of 10,000 rows to sparse codes "
                  f"{res['transform_seconds']:.1f} s ({res['format']}, {res['nnz']} non-zeros, "
                  f"{res['codes_mb']:.1f} MB)")
            print(f"  peak memory (VmHWM, whole process): {res['vm_hwm'] / 2**30:.2f} GB; peak "
                  f"anonymous above baseline {(res['peak_anon'] - res['baseline']) / 2**30:.2f}"
                  " GB")


def read_orders(tmpdir, n_rows=500_000):
    """Cold-cache read throughput of a 1.4 GiB file in the uniform and the buffered order."""
    from _common import write_npy

    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        path = write_npy(Path(tmp) / "big.npy", n_rows, 768)
        print(f"{n_rows} rows x 768 float32 ({Path(path).stat().st_size / 2**30:.2f} GiB), "
              f"batches of 4,096, page cache dropped before each pass; load average "
              f"{os.getloadavg()[0]:.1f}")
        for buffered in (False, True, False, True):
            rate = read_throughput(path, 4096, buffered)
            print(f"  {'mixing buffer' if buffered else 'uniform order'}: {rate:,.0f} rows/s",
                  flush=True)


if __name__ == "__main__":
    main()
