"""Peak memory of out-of-core training: a memory-mapped .npy file against the same data in RAM.

A float32 file several times larger than a batch (default 1,000,000 x 384, 1.5 GB) is written to
a temporary directory (deleted afterwards). Each case runs in a fresh subprocess:

* ``memmap fit``: ``MatchingPursuitSAE().fit(np.load(path, mmap_mode="r"))``;
* ``memmap partial_fit``: ``partial_fit`` over 100,000-row slices of the memory map;
* ``skmpsae fit (CLI)``: the command line, which memory-maps its input;
* ``in-memory fit``: ``fit(np.load(path))``, the whole array read into RAM first.

Memory is the process's *anonymous* resident memory (``RssAnon`` in ``/proc/PID/status``),
sampled by this parent process every few milliseconds. Pages of a memory-mapped file are not
anonymous: the kernel can drop them at will, and they count as page cache, not as the process's
own memory. ``VmHWM`` (the peak of all resident memory, file pages included) is shown as well.
"Above baseline" subtracts the anonymous memory of the interpreter with numpy, torch and
scikit-learn imported.

Each case runs ``--repeats`` times (interleaved); the table shows the largest peak and the
range. Writes the table ``memory`` of ``docs/memory_table.rst`` (included by the user guide;
``--no-write`` only prints it). Run: ``python benchmarks/bench_memory.py`` (about 5-15 minutes
with one thread, depending on the machine's load; needs 1.5 GB of free disk in ``--tmpdir``).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import drop_page_cache, markdown_table, parser, rst_table, write_table

CHILD = r"""
import json, os, sys, time
import numpy as np
import torch
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
import sklearn  # noqa: F401
from skmpsae import MatchingPursuitSAE
from skmpsae.cli import main

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

case, path, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
baseline = status("RssAnon")
print("BASELINE", baseline, flush=True)
tic = time.perf_counter()
if case == "memmap fit":
    model = MatchingPursuitSAE(**params).fit(np.load(path, mmap_mode="r"))
elif case == "memmap partial_fit":
    X = np.load(path, mmap_mode="r")
    model = MatchingPursuitSAE(**params)
    for start in range(0, X.shape[0], 100_000):
        model.partial_fit(X[start : start + 100_000])
elif case == "skmpsae fit (CLI)":
    out = path + ".joblib"
    argv = ["fit", path, "-o", out, "-q", "--model", "mp", "--device", "cpu",
            "--n-components", str(params["n_components"]), "--k", str(params["n_nonzero_coefs"]),
            "--batch-size", str(params["batch_size"]), "--max-iter", str(params["max_iter"]),
            "--random-state", "0"]
    assert main(argv) == 0
    os.remove(out)
else:
    model = MatchingPursuitSAE(**params).fit(np.load(path))
seconds = time.perf_counter() - tic
print("RESULT", json.dumps({"baseline": baseline, "seconds": seconds,
                             "vm_hwm": status("VmHWM"), "rss_file": status("RssFile")}), flush=True)
"""

CASES = ("memmap fit", "memmap partial_fit", "skmpsae fit (CLI)", "in-memory fit")
# The cases as the user guide's table names them.
LABELS = {
    "memmap fit": '``fit`` on ``np.load(path, mmap_mode="r")``',
    "memmap partial_fit": "``partial_fit`` on 100,000-row slices of the memmap",
    "skmpsae fit (CLI)": "``skmpsae fit`` (command line)",
    "in-memory fit": "``fit`` on ``np.load(path)`` (in memory)",
}


def write_file(path, n_samples, n_features, seed=0):
    """Random float32 data written chunk by chunk, so this process never holds it whole."""
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_samples, n_features))
    rng = np.random.default_rng(seed)
    for start in range(0, n_samples, 50_000):
        stop = min(start + 50_000, n_samples)
        X[start:stop] = rng.random((stop - start, n_features), dtype=np.float32)
    X.flush()
    del X


def read_anon(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_case(case, path, params, threads, interval=0.003):
    env = {
        **os.environ,
        "BENCH_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": "",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, case, str(path), json.dumps(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = 0
    while child.poll() is None:
        anon = read_anon(child.pid)
        if anon is not None:
            peak = max(peak, anon)
        time.sleep(interval)
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{err}")
    result = json.loads(out.split("RESULT", 1)[1])
    return {
        "case": case,
        "peak_anon": peak / 2**20,
        "above_baseline": (peak - result["baseline"]) / 2**20,
        "vm_hwm": result["vm_hwm"] / 2**20,
        "seconds": result["seconds"],
    }


def summarise(runs):
    """One row per case from its runs: the largest peak (the honest figure for "how much memory
    does this need"), the lowest one, and the best time."""
    rows = []
    for results in runs.values():
        row = dict(max(results, key=lambda r: r["peak_anon"]))
        row["lowest_peak"] = min(r["peak_anon"] for r in results)
        row["range"] = f"{row['lowest_peak']:.0f}-{row['peak_anon']:.0f}"
        row["seconds"] = min(r["seconds"] for r in results)
        row["label"] = LABELS.get(row["case"], row["case"])
        rows.append(row)
    return rows


def printed_table(rows, repeats):
    """The table this script prints: the cases' peaks, with the range over the runs."""
    return markdown_table(
        rows,
        [
            ("case", "case", ""),
            ("peak_anon", "peak anonymous RSS (MiB)", ".0f"),
            ("range", f"range over {repeats} runs", ""),
            ("above_baseline", "above the imports (MiB)", ".0f"),
            ("vm_hwm", "VmHWM incl. file pages (MiB)", ".0f"),
            ("seconds", "fit time, best (s)", ".1f"),
        ],
    )


def guide_table(rows, setup):
    """The user guide's table (reStructuredText): the setup in a sentence, then the cases.

    ``setup``: ``n_samples``, ``n_features``, ``size_mb``, ``batch_size``, ``n_components``,
    ``threads`` and ``repeats`` of the run.
    """
    batch_mb = setup["batch_size"] * setup["n_features"] * 4 / 2**20
    spread = max(r["peak_anon"] - r["lowest_peak"] for r in rows)
    # What the interpreter holds before fitting: the same in every case.
    imports = rows[0]["peak_anon"] - rows[0]["above_baseline"]
    caption = (
        f"A {setup['n_samples']:,} x {setup['n_features']} float32 file of "
        f"{setup['size_mb']:,.0f} MiB ({setup['size_mb'] / batch_mb:.0f} batches of "
        f"{setup['batch_size']:,} rows); MatchingPursuitSAE with {setup['n_components']} atoms, "
        f"k=8, one epoch, {setup['threads']} thread(s). Each case ran {setup['repeats']} times, "
        f"each time in a fresh process; the table shows the largest peak (the runs of a case "
        f"differed by at most {spread:.0f} MiB). The interpreter with numpy, torch and "
        f"scikit-learn imported holds {imports:.0f} MiB."
    )
    table = rst_table(
        rows,
        [
            ("label", "case", ""),
            ("peak_anon", "peak anonymous RSS (MiB)", ".0f"),
            ("above_baseline", "above the imports (MiB)", ".0f"),
            ("vm_hwm", "VmHWM, file pages included (MiB)", ".0f"),
            ("seconds", f"fit time, best of {setup['repeats']} (s)", ".1f"),
        ],
        widths=(30, 18, 18, 18, 16),
    )
    return f"{caption}\n\n{table}"


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n-samples", type=int, default=1_000_000)
    p.add_argument("--n-features", type=int, default=384)
    p.add_argument("--n-components", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--tmpdir", default=None, help="where to write the file (default: system temp)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of the cases")
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of each case, interleaved; the table gives the largest peak",
    )
    args = p.parse_args(argv)

    params = {
        "n_components": args.n_components,
        "n_nonzero_coefs": 8,
        "batch_size": args.batch_size,
        "max_iter": 1,
        "random_state": 0,
        "device": "cpu",
    }
    directory = Path(tempfile.mkdtemp(prefix="skmpsae-bench-memory-", dir=args.tmpdir))
    try:
        path = directory / "activations.npy"
        write_file(path, args.n_samples, args.n_features)
        size_mb = path.stat().st_size / 2**20
        batch_mb = args.batch_size * args.n_features * 4 / 2**20
        print(
            f"file: {args.n_samples} x {args.n_features} float32, {size_mb:.0f} MiB "
            f"({size_mb / batch_mb:.0f} batches of {args.batch_size} rows, {batch_mb:.1f} MiB "
            f"each); {args.n_components} atoms, k=8, one epoch, {args.threads} thread(s)"
        )
        runs = {case.strip(): [] for case in args.cases.split(",")}
        for _ in range(args.repeats):
            for case, results in runs.items():
                drop_page_cache(path)
                results.append(run_case(case, path, params, args.threads))
                print(
                    f"  {case}: peak anonymous {results[-1]['peak_anon']:.0f} MiB, "
                    f"{results[-1]['seconds']:.1f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rows = summarise(runs)
    print()
    print(printed_table(rows, args.repeats))
    if not args.no_write:
        setup = {
            "n_samples": args.n_samples,
            "n_features": args.n_features,
            "size_mb": size_mb,
            "batch_size": args.batch_size,
            "n_components": args.n_components,
            "threads": args.threads,
            "repeats": args.repeats,
        }
        write_table("memory", guide_table(rows, setup), page="memory_table.rst")


if __name__ == "__main__":
    main()
