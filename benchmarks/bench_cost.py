"""MP-SAE's cost against TopK, BatchTopK and Matryoshka, each at its default batch (issue 29).

Activation-like rows (``_common.activation_like``: d=768, a mean plus 32 of 32,768 Zipf-frequent
directions, exponential magnitudes, noise), 16,384 training rows and 2,048 held out; at 4,096
and 16,384 atoms, k=32, float32, every estimator as a user gets it (MP's ``batch_size="auto"``
included), one after the other in one process, so that the ratios are measured side by side
under the same load:

- the epoch time (``EpochInfo.seconds``): the first epoch (one-time costs included: MP's
  selection-path measuring, first-call costs) and the best later epoch (steady state);
- the transform time of the held-out rows: the first call (MP builds and caches its Gram
  matrix) and the best of two later calls;
- the held-out R2 after each epoch (``early_stopping=True`` with the held-out share as
  validation set and no stop), from which the time each needs to reach a common R2 (the lowest
  of the estimators' best) is read: the summed epoch times up to the first epoch at or above it;
- MP also at ``n_components / 4`` rows per batch (the ``batch_size="auto"`` rule before
  issue 29), where that differs from today's rule;
- for MP's transform, its roofline: the correlation GEMM at the machine's measured GEMM speed
  plus the Gram rows the k steps read (``n k K`` floats) at the measured memory bandwidth.

Writes the tables ``cost-goal`` and ``cost`` of ``docs/performance.md`` and the figure
``docs/cost_scaling.png`` (``--no-write``, ``--no-plot``). Run:
``.venv/bin/python benchmarks/bench_cost.py`` (about 15 minutes with one thread);
``--tiny`` runs small sizes in a few seconds (the test suite's smoke run).
"""

import time

import numpy as np
from _common import (
    activation_like,
    best_seconds,
    cpu_model,
    goal_table,
    limit_threads,
    markdown_table,
    parser,
    save_figure,
    use_agg,
    write_table,
)

ESTIMATORS = ("MatchingPursuitSAE", "TopKSAE", "BatchTopKSAE", "MatryoshkaSAE")
SHORT = {
    "MatchingPursuitSAE": "MP",
    "TopKSAE": "TopK",
    "BatchTopKSAE": "BatchTopK",
    "MatryoshkaSAE": "Matryoshka",
}
# Issue 29's goals: MP at most this many times TopK's epoch and transform time.
GOAL_FIT, GOAL_TRANSFORM = 1.5, 1.2


def load_average():
    with open("/proc/loadavg") as file:
        return float(file.read().split()[0])


def machine_speed(n, d, K, repeats=3):
    """Single-process GEMM speed (flop/s) on an (n, d) x (d, K) product and memory bandwidth
    (bytes/s, read + write of a copy far larger than the caches)."""
    import torch

    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(n, d, generator=g), torch.randn(K, d, generator=g)
    best = best_seconds(lambda: A @ B.T, repeats)
    src = torch.randn(64 << 20, generator=g)  # 256 MiB
    dst = torch.empty_like(src)
    copy = best_seconds(lambda: dst.copy_(src), repeats)
    return 2.0 * n * d * K / best, 2.0 * src.numel() * 4 / copy


def _seconds(fn):
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def make_estimator(
    name, n_components, k, max_iter, validation_fraction, device="cpu", batch_size=None
):
    import skmpsae

    extra = {} if batch_size is None else {"batch_size": batch_size}
    return getattr(skmpsae, name)(
        **extra,
        n_components=n_components,
        n_nonzero_coefs=k,
        max_iter=max_iter,
        random_state=0,
        device=device,
        early_stopping=True,
        validation_fraction=validation_fraction,
        n_iter_no_change=max_iter + 1,
    )


def measure(name, n_components, k, X, n_test, epochs, device="cpu", batch_size=None):
    """One estimator's row: epoch times, held-out R2 per epoch, transform times."""
    seconds = []
    fraction = n_test / X.shape[0]
    sae = make_estimator(name, n_components, k, epochs, fraction, device, batch_size)
    sae.set_params(callback=lambda info: seconds.append(info.seconds))
    sae.fit(X)
    from skmpsae._train.early_stopping import _validation_split

    _, X_test = _validation_split(X, sae.validation_fraction, sae.random_state)  # fit's split
    first = _seconds(lambda: sae.transform(X_test))
    later = best_seconds(lambda: sae.transform(X_test), 2)
    return {
        "estimator": SHORT[name] + ("" if batch_size is None else f", batch {batch_size:,}"),
        "K": n_components,
        "batch": sae._batch_size(),
        "epoch_first": seconds[0],
        "epoch": min(seconds[1:]) if len(seconds) > 1 else seconds[0],
        "epoch_seconds": seconds,
        "r2_curve": list(sae.validation_scores_),
        "r2": max(sae.validation_scores_),
        "transform_first": first,
        "transform": later,
        "path": getattr(sae, "selection_method_", None),
    }


def time_to_common_r2(rows):
    """Add ``to_r2`` (seconds of training to the first epoch at or above the common R2) and
    ``epochs_to_r2`` to each row of one size; return the common R2."""
    common = min(row["r2"] for row in rows)
    for row in rows:
        reached = next(i for i, r in enumerate(row["r2_curve"]) if r >= common)
        row["epochs_to_r2"] = reached + 1
        row["to_r2"] = sum(row["epoch_seconds"][: reached + 1])
    topk = next(row for row in rows if row["estimator"] == "TopK")
    for row in rows:
        row["to_r2_ratio"] = row["to_r2"] / topk["to_r2"]
    return common


def with_ratios(rows):
    topk = next(row for row in rows if row["estimator"] == "TopK")
    for row in rows:
        row["fit_ratio"] = row["epoch"] / topk["epoch"]
        row["fit_first_ratio"] = row["epoch_first"] / topk["epoch_first"]
        row["transform_ratio"] = row["transform"] / topk["transform"]


def roofline(row, n_test, d, k, flops, bandwidth):
    """MP transform's lower bound: the correlation GEMM at the measured GEMM speed plus the
    Gram rows the k - 1 updates read, at the measured bandwidth."""
    K = row["K"]
    gemm = 2.0 * n_test * d * K / flops
    rows = (k - 1) * n_test * K * 4 / bandwidth
    return gemm + rows


def cost_table(rows, caption):
    columns = [
        ("K", "atoms", ""),
        ("estimator", "estimator", ""),
        ("batch", "default batch", ""),
        ("epoch", "epoch (s)", ".2f"),
        ("fit_ratio", "/ TopK", ".2f"),
        ("epoch_first", "first epoch (s)", ".2f"),
        ("fit_first_ratio", "/ TopK", ".2f"),
        ("transform", "transform (s)", ".3f"),
        ("transform_ratio", "/ TopK", ".2f"),
        ("roofline", "MP roofline (s)", ".3f"),
        ("r2", "best held-out R2", ".3f"),
        ("common", "common R2", ".3f"),
        ("to_r2", "time to it (s)", ".1f"),
        ("epochs_to_r2", "epochs", ""),
        ("to_r2_ratio", "/ TopK", ".2f"),
    ]
    return f"{caption}\n\n{markdown_table(rows, columns)}"


def goal_summary(rows):
    goals = []
    for K in sorted({row["K"] for row in rows}):
        mp = next(r for r in rows if r["K"] == K and r["estimator"] == "MP")
        goals.append(
            {
                "goal": f"{K:,} atoms: MP epoch <= {GOAL_FIT}x TopK's (default batches)",
                "measured": f"{mp['fit_ratio']:.2f}x ({mp['epoch']:.2f} s, first epoch "
                f"{mp['fit_first_ratio']:.2f}x)",
                "met": "yes" if mp["fit_ratio"] <= GOAL_FIT else "no",
            }
        )
        goals.append(
            {
                "goal": f"{K:,} atoms: MP transform <= {GOAL_TRANSFORM}x TopK's",
                "measured": f"{mp['transform_ratio']:.2f}x ({mp['transform']:.3f} s; "
                f"{mp['transform'] / mp['roofline']:.2f}x its roofline)",
                "met": "yes" if mp["transform_ratio"] <= GOAL_TRANSFORM else "no",
            }
        )
    return goal_table(goals, "goal (issue 29), `bench_cost.py`")


def plot(rows, path_name):
    plt = use_agg()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in SHORT.values():
        mine = sorted((r for r in rows if r["estimator"] == name), key=lambda r: r["K"])
        K = [r["K"] for r in mine]
        axes[0].plot(K, [r["epoch"] for r in mine], marker="o", label=name)
        axes[1].plot(K, [r["transform"] for r in mine], marker="o", label=name)
    mp = sorted((r for r in rows if r["estimator"] == "MP"), key=lambda r: r["K"])
    axes[1].plot(
        [r["K"] for r in mp], [r["roofline"] for r in mp], "k--", label="MP roofline", lw=1
    )
    titles = ("training epoch (default batch)", "transform (held-out rows)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n_components (atoms)")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return save_figure(fig, path_name)


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4096,16384", help="atoms, comma-separated")
    p.add_argument("--rows", type=int, default=16384, help="training rows (default 16,384)")
    p.add_argument("--test-rows", type=int, default=2048, help="held-out rows (default 2,048)")
    p.add_argument("--n-features", type=int, default=768)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="epochs per fit (default 3)")
    p.add_argument("--tiny", action="store_true", help="a smoke run: small sizes, nothing written")
    args = p.parse_args(argv)
    if args.tiny:
        args.sizes, args.rows, args.test_rows, args.n_features, args.k = "64,128", 512, 128, 32, 4
        args.epochs, args.no_write, args.no_plot = 2, True, True
    limit_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    n, d, k = args.rows + args.test_rows, args.n_features, args.k
    X = np.concatenate(list(activation_like(n, d, n_true=max(4 * max(sizes), 1024))))
    cpu, load_before = cpu_model(), load_average()
    flops, bandwidth = machine_speed(args.test_rows, d, max(sizes))
    print(
        f"{cpu}; {args.threads} thread(s); GEMM {flops / 1e9:.0f} GFLOP/s, copy "
        f"{bandwidth / 1e9:.1f} GB/s; load average {load_before:.2f}",
        flush=True,
    )
    rows = []
    for K in sizes:
        mine = []
        runs = [(name, None) for name in ESTIMATORS]
        # MP at the rule before issue 29 as well (K / 4 rows), where it differs from today's.
        old_batch = K // 4
        if (
            old_batch >= 512
            and old_batch != make_estimator("MatchingPursuitSAE", K, k, 1, 0.1)._batch_size()
        ):
            runs.insert(1, ("MatchingPursuitSAE", old_batch))
        for name, batch_size in runs:
            row = measure(name, K, k, X, args.test_rows, args.epochs, batch_size=batch_size)
            print(
                f"K={K} {row['estimator']}: epoch {row['epoch']:.2f} s (first "
                f"{row['epoch_first']:.2f}), transform {row['transform']:.3f} s, R2 "
                f"{', '.join(f'{r:.3f}' for r in row['r2_curve'])}",
                flush=True,
            )
            mine.append(row)
        common = time_to_common_r2(mine)
        with_ratios(mine)
        for row in mine:
            row["common"] = common
            if row["estimator"].startswith("MP"):
                row["roofline"] = roofline(row, args.test_rows, d, k, flops, bandwidth)
        rows += mine
    load_after = load_average()
    caption = (
        f"{cpu}, {args.threads} torch thread(s), float32; activation-like rows (d={d}), "
        f"{args.rows:,} training and {args.test_rows:,} held-out, k={k}, {args.epochs} epochs "
        f"per fit; each estimator at its default batch, all in one run (load average "
        f"{load_before:.1f} before, {load_after:.1f} after, on 2 cores shared with other "
        f"work). Epoch: best epoch after the first; transform: the held-out rows, best of 2 "
        f"after a first call. Machine: GEMM {flops / 1e9:.0f} GFLOP/s, copy "
        f"{bandwidth / 1e9:.1f} GB/s (the roofline's speeds)."
    )
    table, goal = cost_table(rows, caption), goal_summary(rows)
    print(f"\n{table}\n\n{goal}")
    if not args.no_write:
        write_table("cost-goal", goal, page="performance.md")
        write_table("cost", table, page="performance.md")
    if not args.no_plot:
        plot(rows, "cost_scaling.png")
    return rows


if __name__ == "__main__":
    main()
