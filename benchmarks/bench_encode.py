"""Matching-pursuit encoding: the Gram path against the unrolled loops, and how its cost scales.

Main table: 2,048 MNIST rows (the 904 digits not used as atoms, and copies shifted by one
pixel), 784 features, 4,096 atoms (centred, normalised digits), k=32, positive codes, float32:

* ``skmpsae`` Gram path with the Gram matrix cached, as a fitted ``MatchingPursuitSAE``'s
  ``transform`` runs it, and with ``D D^T`` computed in the call (``matching_pursuit``);
* the unrolled loop of the MP-SAE papers' code (per step a full ``r @ D.T``, a one-hot code and
  ``r -= onehot @ D``; ``skmpsae._reference._naive_matching_pursuit``);
* a leaner loop with one GEMM per step (``r @ D.T``, argmax, ``r -= value * D[index]``).

Then a sweep of the Gram path's row-chunk size, and the figure ``docs/encode_scaling.png``:
time per pursuit step against n_components for three n_features (MNIST pooled 2x2, as is, and
upsampled 2x2), and encode time against k. All times are wall-clock, best of 3, methods
alternating within each repeat.

Run: ``.venv/bin/python benchmarks/bench_encode.py`` (about 8 minutes with one thread on a
loaded 2-core machine).
"""

import numpy as np
import torch
from _common import limit_threads, markdown_table, parser, save_figure, timed, use_agg

import skmpsae._pursuit_steps as steps
from skmpsae._pursuit import _scatter_codes
from skmpsae._reference import _naive_matching_pursuit
from skmpsae._selection import _select_mp
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
    indices, values = _select_mp(X, dictionary, k, positive=True, gram=gram)
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


def main_table(repeats):
    X, D = digits(N_ROWS, N_COMPONENTS)
    gram = steps._gram(D)
    fns = {
        "gram": lambda: gram_path(X, D, K, gram),
        "gram+G": lambda: gram_path(X, D, K, steps._gram(D)),
        "one_gemm": lambda: one_gemm_per_step(X, D, K),
        "naive": lambda: _naive_matching_pursuit(X, D, K),
    }
    best, codes = best_of(repeats, fns)
    labels = {
        "gram": "skmpsae Gram path, cached D D^T (fitted estimator)",
        "gram+G": "skmpsae Gram path, D D^T computed in the call",
        "one_gemm": "one GEMM per step (r @ D.T, argmax, axpy)",
        "naive": "naive unrolled loop (papers' code: one-hot products)",
    }
    rows = []
    for name, label in labels.items():
        same = ((codes[name] != 0) == (codes["naive"] != 0)).all(dim=1).float().mean()
        rows.append({
            "method": label, "seconds": best[name], "vs_naive": best["naive"] / best[name],
            "vs_gemm": best["one_gemm"] / best[name], "same": float(same),
            "diff": float((codes[name] - codes["naive"]).abs().max()),
        })
    print(f"MP encoding: {N_ROWS} MNIST rows x 784 features, {N_COMPONENTS} atoms, k={K}, "
          f"positive, float32; wall-clock best of {repeats}")
    print(markdown_table(rows, [
        ("method", "encoder", ""), ("seconds", "seconds", ".3f"),
        ("vs_naive", "speed-up vs naive", ".1f"), ("vs_gemm", "speed-up vs one-GEMM loop", ".1f"),
        ("same", "rows with the naive loop's atoms", ".2%"),
        ("diff", "max abs code difference", ".1e"),
    ]))
    return X, D, gram


def chunk_sweep(X, D, gram, repeats):
    rows, default = [], steps._CHUNK_BYTES
    row_bytes = D.shape[0] * X.element_size()
    for chunk_rows in (16, 64, 128, 256, 512, 2048):
        steps._CHUNK_BYTES = chunk_rows * row_bytes
        best, _ = best_of(repeats, {"t": lambda: gram_path(X, D, K, gram)})
        rows.append(
            {"rows": chunk_rows, "mb": chunk_rows * row_bytes / 2**20, "seconds": best["t"]}
        )
    steps._CHUNK_BYTES = default
    print(f"\nGram path by row-chunk size (default {default // row_bytes} rows); best of {repeats}")
    print(markdown_table(rows, [("rows", "rows per chunk", "d"), ("mb", "correlation block (MB)",
                                ".2f"), ("seconds", "seconds", ".3f")]))


def scaling(repeats):
    """Per-step cost against n_components for three n_features, and time against k."""
    by_components = {}
    shapes = (("196 (pooled)", 2, 1), ("784", 1, 1), ("3136 (upsampled)", 1, 2))
    for label, pool, upsample in shapes:
        for n_components in (512, 1024, 2048, 4096, 8192):
            X, D = digits(N_ROWS, n_components, pool, upsample)
            gram = steps._gram(D)
            best, _ = best_of(repeats, {
                "gemm": lambda X=X, D=D: X @ D.T,
                "encode": lambda X=X, D=D, gram=gram: gram_path(X, D, K, gram),
            })
            per_step = (best["encode"] - best["gemm"]) / K
            by_components.setdefault(label, []).append((n_components, per_step, best["gemm"]))
            print(f"n_features {label}, {n_components} atoms: first GEMM {best['gemm']:.3f}s, "
                  f"{1e3 * per_step:.2f} ms per step", flush=True)
    by_k = []
    X, D = digits(N_ROWS, N_COMPONENTS)
    gram = steps._gram(D)
    for k in (4, 8, 16, 32, 64, 128):
        best, _ = best_of(repeats, {"gram": lambda k=k: gram_path(X, D, k, gram),
                                    "one_gemm": lambda k=k: one_gemm_per_step(X, D, k)})
        by_k.append((k, best["gram"], best["one_gemm"]))
        print(f"k={k}: Gram path {best['gram']:.3f}s, one GEMM per step {best['one_gemm']:.3f}s",
              flush=True)
    return by_components, by_k


def plot(by_components, by_k):
    plt = use_agg()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, points in by_components.items():
        points = np.array(points)
        left.plot(points[:, 0], 1e3 * points[:, 1], "o-", label=f"n_features = {label}")
    left.set(xlabel="n_components", ylabel="ms per pursuit step (2,048 rows)",
             title="Per-step cost: linear in n_components,\nindependent of n_features")
    left.set_ylim(bottom=0)
    left.legend()
    by_k = np.array(by_k)
    right.plot(by_k[:, 0], by_k[:, 1], "o-", label="skmpsae Gram path")
    right.plot(by_k[:, 0], by_k[:, 2], "s--", label="one GEMM per step")
    right.set(xscale="log", yscale="log", xlabel="k (pursuit steps)", ylabel="seconds",
              title=f"Encode time, {N_ROWS} rows, {N_COMPONENTS} atoms, 784 features")
    right.set_xticks(by_k[:, 0], [str(int(k)) for k in by_k[:, 0]])
    right.legend()
    fig.tight_layout()
    save_figure(fig, "encode_scaling.png")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks-only", action="store_true",
                   help="only the sweep of the row-chunk size (about a minute)")
    args = p.parse_args(argv)
    limit_threads(args.threads)
    if args.chunks_only:
        X, D = digits(N_ROWS, N_COMPONENTS)
        chunk_sweep(X, D, steps._gram(D), args.repeats)
        return
    X, D, gram = main_table(args.repeats)
    chunk_sweep(X, D, gram, args.repeats)
    if not args.no_plot:
        plot(*scaling(args.repeats))


if __name__ == "__main__":
    main()
