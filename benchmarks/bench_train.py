"""One MP-SAE training epoch: memory-light Gram-path step against the naive unrolled loop.

4,096 MNIST digits (float32, scaled to [0, 1]), 4,096 atoms, k=32, batches of 1,024: one epoch
of Adam steps through ``MatchingPursuitSAE``'s own torch module, whose step selects the atoms
without gradients (Gram path) and recomputes the coefficients differentiably from the selected
atoms only, against the same module whose forward pass runs the unrolled loop of the MP-SAE
papers' code under autograd (per step a full ``r @ D.T``, a one-hot code, ``r -= onehot @ D``).
Both start from the same dictionary and bias and take the same batches, so their dictionaries
after the epoch must agree up to float rounding; the table gives both last-batch losses.

Each (variant, repeat) runs in a fresh subprocess. Time: the epoch's wall-clock seconds, best of
3, the variants alternating. Peak memory: ``VmHWM`` (the process's peak resident set, from
``/proc/self/status``) minus ``VmRSS`` just before the epoch (data, model and optimiser state
already allocated, torch warmed up by one small step), i.e. the extra memory the epoch itself
needed at its peak. ``tracemalloc`` would miss torch's CPU allocations, hence the kernel's count.

Writes the tables ``train-goal`` and ``train`` of ``docs/performance.md`` (``--no-write`` only
prints them). Run: ``.venv/bin/python benchmarks/bench_train.py`` (about 4 minutes with one
thread).
"""

import json
import subprocess
import sys
import time

import numpy as np
from _common import (
    goal_table,
    limit_threads,
    markdown_table,
    parser,
    proc_status_mb,
    write_table,
)

N_ROWS, N_COMPONENTS, K, BATCH = 4096, 4096, 32, 1024
VARIANTS = ("gram", "naive")
LABELS = {
    "gram": "Gram-path selection + recomputed coefficients",
    "naive": "naive unrolled loop under autograd",
}
# Issue 3's goal for the memory-light step against the naive loop.
GOAL_SPEEDUP, GOAL_MEMORY = 10, 3


def make_module(variant):
    import torch

    from skmpsae._models.matching_pursuit_module import _MatchingPursuitModule
    from skmpsae._pursuit.reference import _naive_matching_pursuit
    from skmpsae.datasets import load_mnist

    class _NaiveModule(_MatchingPursuitModule):
        def forward(self, x):
            codes = _naive_matching_pursuit(x - self.bias, self.dictionary, self.n_nonzero_coefs)
            atoms = codes.nonzero(as_tuple=True)[1]
            return codes @ self.dictionary + self.bias, atoms

        def loss(self, x, trainer):
            x_hat, atoms = self(x)
            loss = ((x - x_hat) ** 2).sum(dim=1).mean() / x.shape[1]
            fired = torch.bincount(atoms, minlength=self.dictionary.shape[0])
            return loss, fired

    rng = np.random.RandomState(0)
    X = load_mnist().data
    X = X[rng.permutation(X.shape[0])[:N_ROWS]]
    cls = _MatchingPursuitModule if variant == "gram" else _NaiveModule
    module = cls(N_COMPONENTS, X.shape[1], K, True, True, torch.float32, "cpu")
    X = torch.from_numpy(X)
    with torch.no_grad():
        module.bias.copy_(X.mean(dim=0))
        init = (X - X.mean(dim=0))[rng.randint(0, N_ROWS, N_COMPONENTS)]
        init += 0.01 * torch.from_numpy(rng.standard_normal(init.shape).astype(np.float32))
        module.dictionary.copy_(init)
        module.normalize()
    return module, X


def run_epoch(module, optimizer, X):
    for start in range(0, X.shape[0], BATCH):
        loss, _ = module.loss(X[start : start + BATCH], None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module.project_gradients()
        optimizer.step()
        module.normalize()
    return float(loss.detach())


def worker(variant):
    import torch

    module, X = make_module(variant)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    # Warm torch's kernels up on a few rows with a throw-away optimiser, so the epoch's peak
    # memory and time are its own.
    warm = torch.optim.Adam(module.parameters(), lr=0.0)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.loss(X[:8], None)[0].backward()
    warm.zero_grad(set_to_none=True)
    module.load_state_dict(state)
    del warm, state
    before = proc_status_mb("VmRSS")
    tic = time.perf_counter()
    last_loss = run_epoch(module, optimizer, X)
    seconds = time.perf_counter() - tic
    peak = proc_status_mb("VmHWM")
    print(
        json.dumps(
            {"seconds": seconds, "rss_before_mb": before, "peak_mb": peak, "loss": last_loss}
        )
    )


def summarise(results):
    """One row per variant from its runs (``results``: variant -> the workers' outputs, in
    order): the best time and memory, and both against the naive loop."""
    rows = []
    for variant, runs in results.items():
        rows.append(
            {
                "variant": variant,
                "method": LABELS[variant],
                "seconds": min(r["seconds"] for r in runs),
                "extra_mb": min(r["extra_mb"] for r in runs),
                "peak_mb": min(r["peak_mb"] for r in runs),
                "loss": runs[-1]["loss"],
                "runs": ", ".join(f"{r['seconds']:.2f} s (+{r['extra_mb']:.0f} MB)" for r in runs),
            }
        )
    naive = next(row for row in rows if row["variant"] == "naive")
    for row in rows:
        row["speedup"] = naive["seconds"] / row["seconds"]
        row["mem_ratio"] = naive["extra_mb"] / row["extra_mb"]
    return rows


def epoch_table(rows, threads, repeats):
    caption = (
        f"One epoch: {N_ROWS} MNIST rows, {N_COMPONENTS} atoms, k={K}, batch {BATCH}, "
        f"float32, {threads} thread(s); best of {repeats}, one process per run."
    )
    table = markdown_table(
        rows,
        [
            ("method", "training step", ""),
            ("seconds", "epoch (s)", ".2f"),
            ("speedup", "speed-up", ".1f"),
            ("extra_mb", "peak memory above start (MB)", ".0f"),
            ("mem_ratio", "memory ratio", ".1f"),
            ("peak_mb", "peak RSS (MB)", ".0f"),
            ("loss", "last batch loss", ".5f"),
        ],
    )
    runs = "; ".join(f"{row['method']}: {row['runs']}" for row in rows)
    return f"{caption}\n\n{table}\n\nEach run in order, epoch and peak memory above start: {runs}."


def goal_summary(rows):
    """Issue 3's training goal: the Gram-path step against the naive loop."""
    gram, naive = (next(row for row in rows if row["variant"] == v) for v in ("gram", "naive"))
    met = gram["speedup"] >= GOAL_SPEEDUP and gram["mem_ratio"] >= GOAL_MEMORY
    return goal_table(
        [
            {
                "goal": f"One training epoch, {N_ROWS:,} rows, {N_COMPONENTS:,} atoms, k={K}, "
                f"batch {BATCH:,}: >= {GOAL_SPEEDUP}x faster, >= {GOAL_MEMORY}x less peak memory",
                "measured": f"**{gram['speedup']:.1f}x** faster ({gram['seconds']:.1f} s against "
                f"{naive['seconds']:.1f} s), **{gram['mem_ratio']:.1f}x** less peak memory "
                f"(+{gram['extra_mb']:,.0f} MB against +{naive['extra_mb']:,.0f} MB)",
                "met": "yes" if met else "no",
            }
        ],
        "goal (issue 3), `bench_train.py`",
    )


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--worker", choices=VARIANTS, help=argparse_hidden())
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    if args.worker:
        worker(args.worker)
        return
    results = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats):
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--worker", variant, "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res = json.loads(done.stdout.strip().splitlines()[-1])
            res["extra_mb"] = res["peak_mb"] - res["rss_before_mb"]
            results[variant].append(res)
            print(
                f"repeat {repeat + 1} {variant}: {res['seconds']:.2f}s, "
                f"peak +{res['extra_mb']:.0f} MB",
                flush=True,
            )
    rows = summarise(results)
    table, goal = epoch_table(rows, args.threads, args.repeats), goal_summary(rows)
    print(f"\n{table}\n\n{goal}")
    if not args.no_write:
        write_table("train-goal", goal, page="performance.md")
        write_table("train", table, page="performance.md")


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
