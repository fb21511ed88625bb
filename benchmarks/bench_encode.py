"""Matching-pursuit encoding: the Gram path against the unrolled loops, and how its cost scales.

Main table: 2,048 MNIST rows (the 904 digits not used as atoms, and copies shifted by one
pixel), 784 features, 4,096 atoms (centred, normalised digits), k=32, positive codes, float32:

* ``skmpsae`` Gram path with the Gram matrix cached, as a fitted ``MatchingPursuitSAE``'s
  ``transform`` runs it, and with ``D D^T`` computed in the call (``matching_pursuit``);
* the unrolled loop of the MP-SAE papers' code (per step a full ``r @ D.T``, a one-hot code and
  ``r -= onehot @ D``; ``skmpsae._pursuit.reference._naive_matching_pursuit``);
* a leaner loop with one GEMM per step (``r @ D.T``, argmax, ``r -= value * D[index]``).

Then a sweep of the Gram path's row-chunk size, and the figure ``docs/encode_scaling.png``:
time per pursuit step against n_components for three n_features (MNIST pooled 2x2, as is, and
upsampled 2x2), and encode time against k. All times are wall-clock, best of 3, methods
alternating within each repeat.

Writes the tables ``encode-goal``, ``encode``, ``encode-chunks`` and ``encode-scaling`` of
``docs/performance.md`` (``--no-write`` only prints them; ``--chunks-only`` writes
``encode-chunks`` alone, ``--no-plot`` skips the scaling runs and their table).
Run: ``.venv/bin/python benchmarks/bench_encode.py`` (about 8 minutes with one thread on a
loaded 2-core machine).
"""

import numpy as np
import torch
from _common import (
    goal_table,
    limit_threads,
    markdown_table,
    parser,
    save_figure,
    timed,
    use_agg,
    write_table,
)

import skmpsae._pursuit.gram as steps
from skmpsae._pursuit.encode import _scatter_codes
from skmpsae._pursuit.reference import _naive_matching_pursuit
from skmpsae._pursuit.selection import _select_mp
from skmpsae.datasets import load_mnist

N_ROWS, N_COMPONENTS, K = 2048, 4096, 32


def one_gemm_per_step(X, dictionary, k):
    """Matching pursuit with a full correlation GEMM per step but no one-hot products."""
    residual = X.clone()
    codes = torch.zeros((X.shape[0], dictionary.shape[0]), dtype=X.dtype)
    rows = torch.arange(X.shape[0])
    for _ in range(k):
        values, indices = (residual @ dictionary.T).max(dim=1)
        values.clamp_min_(0)
        codes[rows, indices] += values
        residual -= values[:, None] * dictionary[indices]
    return codes


def gram_path(X, dictionary, k, gram):
    indices, values, *_ = _select_mp(X, dictionary, k, positive=True, gram=gram)
    return _scatter_codes(indices, values, dictionary.shape[0])


def digits(n_rows, n_atoms, pool=1, upsample=1):
    """Centred MNIST rows and unit-norm digit atoms, disjoint, resized as asked."""
    X = load_mnist().data.reshape(-1, 28, 28)
    if pool > 1:
        X = X.reshape(-1, 28 // pool, pool, 28 // pool, pool).mean(axis=(2, 4))
    if upsample > 1:
        X = X.repeat(upsample, axis=1).repeat(upsample, axis=2)
    X = X.reshape(X.shape[0], -1)
    X = X - X.mean(axis=0)
    perm = np.random.RandomState(0).permutation(X.shape[0])
    atoms = X[perm[: min(n_atoms, 4096)]]
    while atoms.shape[0] < n_atoms:  # more atoms than digits: shifted copies
        atoms = np.concatenate([atoms, np.roll(atoms, atoms.shape[0] // 4096, axis=1)])
    atoms = atoms[:n_atoms] / np.linalg.norm(atoms[:n_atoms], axis=1, keepdims=True)
    rest = X[perm[4096:]]
    rows = np.concatenate([rest] + [np.roll(rest, s, axis=1) for s in (1, -1, 28, -28)])
    rows = torch.from_numpy(rows[:n_rows].astype(np.float32))
    return rows, torch.from_numpy(atoms.astype(np.float32))


def best_of(repeats, fns):
    """Best wall-clock time of each callable, calling them in turn ``repeats`` times."""
    best, results = {name: np.inf for name in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            results[name], seconds = timed(fn)
            best[name] = min(best[name], seconds)
    return best, results


LABELS = {
    "gram": "skmpsae Gram path, cached D D^T (fitted estimator)",
    "gram+G": "skmpsae Gram path, D D^T computed in the call",
    "one_gemm": "one GEMM per step (r @ D.T, argmax, axpy)",
    "naive": "naive unrolled loop (papers' code: one-hot products)",
}
# Issue 3's goal: the Gram path against the naive loop, same codes.
GOAL_SPEEDUP = 20


def measure_main(repeats):
    """The main comparison: one row per encoder (``LABELS``), and the data it ran on."""
    X, D = digits(N_ROWS, N_COMPONENTS)
    gram = steps._gram(D)
    fns = {
        "gram": lambda: gram_path(X, D, K, gram),
        "gram+G": lambda: gram_path(X, D, K, steps._gram(D)),
        "one_gemm": lambda: one_gemm_per_step(X, D, K),
        "naive": lambda: _naive_matching_pursuit(X, D, K),
    }
    best, codes = best_of(repeats, fns)
    rows = []
    for name in LABELS:
        same = ((codes[name] != 0) == (codes["naive"] != 0)).all(dim=1).float().mean()
        rows.append(
            {
                "name": name,
                "seconds": best[name],
                "same": float(same),
                "diff": float((codes[name] - codes["naive"]).abs().max()),
            }
        )
    return rows, (X, D, gram)


def main_table(rows, repeats):
    """The encoders' times, their speed-ups and how far their codes are from the naive loop's."""
    seconds = {row["name"]: row["seconds"] for row in rows}
    rows = [
        {
            **row,
            "method": LABELS[row["name"]],
            "vs_naive": seconds["naive"] / row["seconds"],
            "vs_gemm": seconds["one_gemm"] / row["seconds"],
        }
        for row in rows
    ]
    caption = (
        f"MP encoding: {N_ROWS} MNIST rows x 784 features, {N_COMPONENTS} atoms, k={K}, "
        f"positive, float32; wall-clock best of {repeats}."
    )
    return (
        caption
        + "\n\n"
        + markdown_table(
            rows,
            [
                ("method", "encoder", ""),
                ("seconds", "seconds", ".3f"),
                ("vs_naive", "speed-up vs naive", ".1f"),
                ("vs_gemm", "speed-up vs one-GEMM loop", ".1f"),
                ("same", "rows with the naive loop's atoms", ".2%"),
                ("diff", "max abs code difference", ".1e"),
            ],
        )
    )


def goal_summary(rows):
    """Issue 3's encoding goals, from the rows of :func:`measure_main`."""
    by_name = {row["name"]: row for row in rows}
    naive, gemm = by_name["naive"]["seconds"], by_name["one_gemm"]["seconds"]
    cached, in_call = by_name["gram"], by_name["gram+G"]
    same = min(cached["same"], in_call["same"])
    met = naive / cached["seconds"] >= GOAL_SPEEDUP and same == 1
    return goal_table(
        [
            {
                "goal": f"MP encoding, {N_ROWS:,} x 784, {N_COMPONENTS:,} atoms, k={K}: "
                f">= {GOAL_SPEEDUP}x faster than the naive unrolled loop, same codes",
                "measured": f"**{naive / cached['seconds']:.1f}x** with the cached Gram matrix "
                f"(fitted estimator), {naive / in_call['seconds']:.1f}x when `D D^T` is computed "
                f"in the call; same atoms on {same:.2%} of rows",
                "met": "yes" if met else "no",
            },
            {
                "goal": "... and the ratio against a one-GEMM-per-step loop",
                "measured": f"{gemm / cached['seconds']:.1f}x ({gemm / in_call['seconds']:.1f}x "
                "with `D D^T` in the call)",
                "met": "(reported)",
            },
        ],
        "goal (issue 3), `bench_encode.py`",
    )


def chunk_sweep(X, D, gram, repeats):
    """Seconds of the Gram path for several row-chunk sizes."""
    rows, default = [], steps._CHUNK_BYTES
    row_bytes = D.shape[0] * X.element_size()
    for chunk_rows in (16, 64, 128, 256, 512, 2048):
        steps._CHUNK_BYTES = chunk_rows * row_bytes
        best, _ = best_of(repeats, {"t": lambda: gram_path(X, D, K, gram)})
        rows.append(
            {
                "rows": chunk_rows,
                "mb": chunk_rows * row_bytes / 2**20,
                "seconds": best["t"],
                "default_rows": default // row_bytes,
            }
        )
        print(f"{chunk_rows} rows per chunk: {best['t']:.3f}s", flush=True)
    steps._CHUNK_BYTES = default
    return rows


def chunk_table(rows, repeats):
    """The chunk sweep, and how much the fastest chunk saves against one block of all rows."""
    fastest = min(rows, key=lambda row: row["seconds"])
    one_block = next(row for row in rows if row["rows"] >= N_ROWS)
    return (
        f"Gram path by row-chunk size (default {rows[0]['default_rows']} rows); best of "
        f"{repeats}.\n\n"
        + markdown_table(
            rows,
            [
                ("rows", "rows per chunk", "d"),
                ("mb", "correlation block (MB)", ".2f"),
                ("seconds", "seconds", ".3f"),
            ],
        )
        + f"\n\nFastest: {fastest['rows']} rows per chunk ({fastest['mb']:.2f} MB of "
        f"correlations), {1 - fastest['seconds'] / one_block['seconds']:.0%} less time than one "
        f"block of all {N_ROWS} rows."
    )


def scaling(repeats):
    """Per-step cost against n_components for three n_features, and time against k."""
    by_components = []
    shapes = (("196 (pooled)", 2, 1), ("784", 1, 1), ("3136 (upsampled)", 1, 2))
    for label, pool, upsample in shapes:
        for n_components in (512, 1024, 2048, 4096, 8192):
            X, D = digits(N_ROWS, n_components, pool, upsample)
            gram = steps._gram(D)
            best, _ = best_of(
                repeats,
                {
                    "gemm": lambda X=X, D=D: X @ D.T,
                    "encode": lambda X=X, D=D, gram=gram: gram_path(X, D, K, gram),
                },
            )
            per_step = (best["encode"] - best["gemm"]) / K
            by_components.append(
                {"features": label, "K": n_components, "gemm": best["gemm"], "per_step": per_step}
            )
            print(
                f"n_features {label}, {n_components} atoms: first GEMM {best['gemm']:.3f}s, "
                f"{1e3 * per_step:.2f} ms per step",
                flush=True,
            )
    by_k = []
    X, D = digits(N_ROWS, N_COMPONENTS)
    gram = steps._gram(D)
    for k in (4, 8, 16, 32, 64, 128):
        best, _ = best_of(
            repeats,
            {
                "gram": lambda k=k: gram_path(X, D, k, gram),
                "one_gemm": lambda k=k: one_gemm_per_step(X, D, k),
            },
        )
        by_k.append({"k": k, "gram": best["gram"], "one_gemm": best["one_gemm"]})
        print(
            f"k={k}: Gram path {best['gram']:.3f}s, one GEMM per step {best['one_gemm']:.3f}s",
            flush=True,
        )
    return by_components, by_k


def scaling_tables(by_components, by_k):
    """The numbers behind the figure: per-step cost by shape, and encode time against k."""
    by_components = [{**row, "ms": 1e3 * row["per_step"]} for row in by_components]
    by_k = [{**row, "ratio": row["one_gemm"] / row["gram"]} for row in by_k]
    return (
        f"Per pursuit step ({N_ROWS} rows, k={K}): the encode time less the first GEMM, over k."
        "\n\n"
        + markdown_table(
            by_components,
            [
                ("features", "n_features", ""),
                ("K", "n_components", "d"),
                ("gemm", "first GEMM (s)", ".3f"),
                ("ms", "ms per step", ".2f"),
            ],
        )
        + f"\n\nEncode time against k ({N_ROWS} rows, {N_COMPONENTS} atoms, 784 features).\n\n"
        + markdown_table(
            by_k,
            [
                ("k", "k", "d"),
                ("gram", "Gram path (s)", ".3f"),
                ("one_gemm", "one GEMM per step (s)", ".3f"),
                ("ratio", "one GEMM per step / Gram path", ".1f"),
            ],
        )
    )


def plot(by_components, by_k):
    plt = use_agg()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(row["features"] for row in by_components):
        points = np.array(
            [(row["K"], row["per_step"]) for row in by_components if row["features"] == label]
        )
        left.plot(points[:, 0], 1e3 * points[:, 1], "o-", label=f"n_features = {label}")
    left.set(
        xlabel="n_components",
        ylabel="ms per pursuit step (2,048 rows)",
        title="Per-step cost: linear in n_components,\nindependent of n_features",
    )
    left.set_ylim(bottom=0)
    left.legend()
    by_k = np.array([(row["k"], row["gram"], row["one_gemm"]) for row in by_k])
    right.plot(by_k[:, 0], by_k[:, 1], "o-", label="skmpsae Gram path")
    right.plot(by_k[:, 0], by_k[:, 2], "s--", label="one GEMM per step")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="k (pursuit steps)",
        ylabel="seconds",
        title=f"Encode time, {N_ROWS} rows, {N_COMPONENTS} atoms, 784 features",
    )
    right.set_xticks(by_k[:, 0], [str(int(k)) for k in by_k[:, 0]])
    right.legend()
    fig.tight_layout()
    save_figure(fig, "encode_scaling.png")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--chunks-only",
        action="store_true",
        help="only the sweep of the row-chunk size (about a minute)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads)
    write = not args.no_write
    if args.chunks_only:
        X, D = digits(N_ROWS, N_COMPONENTS)
        chunks = chunk_table(chunk_sweep(X, D, steps._gram(D), args.repeats), args.repeats)
        print(f"\n{chunks}")
        if write:
            write_table("encode-chunks", chunks, page="performance.md")
        return
    rows, (X, D, gram) = measure_main(args.repeats)
    encode, goal = main_table(rows, args.repeats), goal_summary(rows)
    print(f"\n{encode}\n\n{goal}\n")
    chunks = chunk_table(chunk_sweep(X, D, gram, args.repeats), args.repeats)
    print(f"\n{chunks}\n")
    if write:
        write_table("encode-goal", goal, page="performance.md")
        write_table("encode", encode, page="performance.md")
        write_table("encode-chunks", chunks, page="performance.md")
    if not args.no_plot:
        by_components, by_k = scaling(args.repeats)
        tables = scaling_tables(by_components, by_k)
        print(f"\n{tables}")
        if write:
            write_table("encode-scaling", tables, page="performance.md")
        plot(by_components, by_k)


if __name__ == "__main__":
    main()
