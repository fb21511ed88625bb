"""Adaptive sparsity: train at k=16 once, encode MNIST at k = 2..128 without refitting.

``MatchingPursuitSAE`` and ``TopKSAE`` are fitted at ``n_nonzero_coefs=16`` (defaults otherwise,
256 atoms, 4,000 training digits), then the held-out 1,000 digits are encoded with
``set_params(transform_n_nonzero_coefs=k)``:

* MP-SAE with its matching pursuit (each step can only lower the residual, so R2 must rise
  monotonically with k);
* the same MP-SAE dictionary with OMP encoding (``transform_algorithm="omp"``);
* MP-SAE stopping at a residual tolerance (``transform_tol``) instead of a fixed k, so each
  digit gets as many atoms as it needs;
* TopK, BatchTopK and Matryoshka, whose encoders were only ever trained to keep 16 latents (the
  last two encoded with a per-sample TopK at k instead of their threshold). JumpReLU has no k to
  change at inference and is not in this table.

Repeated over ``--seeds`` seeds (split and models); tables show mean ± sd and are written
between the markers ``adaptive-k`` and ``adaptive-tol`` in ``docs/benchmarks.md``.
Run: ``python benchmarks/bench_adaptive.py`` (about 1.5 minutes single-threaded).
"""

import numpy as np
from _common import (
    aggregate,
    limit_threads,
    markdown_table,
    mnist_split,
    parser,
    save_figure,
    timed,
    use_agg,
    write_table,
)

from skmpsae import BatchTopKSAE, MatchingPursuitSAE, MatryoshkaSAE, TopKSAE
from skmpsae.metrics import explained_variance, l0

TRAIN_K = 16
KS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
# Residual tolerances as fractions of the mean squared norm of a centred held-out digit.
TOL_FRACTIONS = (0.5, 0.35, 0.25, 0.15, 0.1, 0.05)
TOPK_FAMILY = {"topk": TopKSAE, "batchtopk": BatchTopKSAE, "matryoshka": MatryoshkaSAE}


def scores(model, X):
    codes = model.transform(X)
    return explained_variance(X, model.inverse_transform(codes)), l0(codes)


def is_monotonic(values, slack=0.0):
    """True when every value is at least the previous one minus ``slack``."""
    return bool(np.all(np.diff(values) >= -slack))


def run_seed(seed):
    X_train, X_test = mnist_split(seed)
    mp, mp_t = timed(MatchingPursuitSAE(n_nonzero_coefs=TRAIN_K, random_state=seed).fit, X_train)
    others = {
        name: cls(n_nonzero_coefs=TRAIN_K, random_state=seed).fit(X_train)
        for name, cls in TOPK_FAMILY.items()
    }
    print(f"seed {seed}: fitted at k={TRAIN_K} (MP-SAE in {mp_t:.1f}s)", flush=True)
    rows = []
    for k in KS:
        row = {"k": k}
        mp.set_params(transform_algorithm="mp", transform_n_nonzero_coefs=k)
        row["mp_r2"], row["mp_l0"] = scores(mp, X_test)
        mp.set_params(transform_algorithm="omp")
        row["omp_r2"], row["omp_l0"] = scores(mp, X_test)
        for name, model in others.items():
            # A TopK encoder cannot keep more latents than it has.
            model.set_params(transform_n_nonzero_coefs=min(k, model.n_components))
            row[f"{name}_r2"], row[f"{name}_l0"] = scores(model, X_test)
        rows.append(row)

    mean_energy = float(np.mean(np.sum((X_test - mp.intercept_) ** 2, axis=1)))
    tol_rows = []
    mp.set_params(transform_algorithm="mp", transform_n_nonzero_coefs=None)
    for fraction in TOL_FRACTIONS:
        mp.set_params(transform_tol=fraction * mean_energy)
        r2, mean_l0 = scores(mp, X_test)
        tol_rows.append({"fraction": fraction, "r2": r2, "l0": mean_l0})
    return rows, tol_rows


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    per_seed, per_seed_tol = [], []
    for seed in range(args.seeds):
        rows, tol_rows = run_seed(seed)
        per_seed.extend(rows)
        per_seed_tol.extend(tol_rows)
    rows = aggregate(per_seed, ["k"])
    tol_rows = aggregate(per_seed_tol, ["fraction"])
    labels = {
        "mp": "MP-SAE, MP encoding",
        "omp": "MP-SAE, OMP encoding",
        "topk": "TopK",
        "batchtopk": "BatchTopK",
        "matryoshka": "Matryoshka",
    }
    curves = {
        label: [(float(r[f"{key}_l0"]), float(r[f"{key}_r2"])) for r in rows]
        for key, label in labels.items()
    }
    curves["MP-SAE, residual tolerance"] = [(float(r["l0"]), float(r["r2"])) for r in tol_rows]

    k_table = markdown_table(
        rows,
        [
            ("k", "encode k", "d"),
            ("mp_r2", "MP-SAE R2 (MP)", ".4f"),
            ("mp_l0", "L0", ".1f"),
            ("omp_r2", "MP-SAE R2 (OMP)", ".4f"),
            ("topk_r2", "TopK R2", ".4f"),
            ("topk_l0", "L0", ".1f"),
            ("batchtopk_r2", "BatchTopK R2", ".4f"),
            ("batchtopk_l0", "L0", ".1f"),
            ("matryoshka_r2", "Matryoshka R2", ".4f"),
        ],
    )
    tol_table = markdown_table(
        tol_rows,
        [
            ("fraction", "transform_tol / mean squared norm", ".2f"),
            ("r2", "MP-SAE R2", ".4f"),
            ("l0", "mean L0 reached", ".2f"),
        ],
    )
    print()
    print(k_table)
    print()
    print(tol_table)
    print()
    for key in ("mp", "omp", "topk", "batchtopk"):
        means = [float(r[f"{key}_r2"]) for r in rows]
        print(
            f"{labels[key]}: monotonic over k={KS[0]}..{KS[-1]}: {is_monotonic(means)} "
            f"({means[0]:.4f} -> {means[-1]:.4f}, best {max(means):.4f})"
        )
    if not args.no_write:
        write_table("adaptive-k", k_table)
        write_table("adaptive-tol", tol_table)

    if not args.no_plot:
        plt = use_agg()
        from skmpsae.plotting import plot_r2_vs_l0

        ax = plot_r2_vs_l0(curves, logx=True)
        ax.axvline(TRAIN_K, color="grey", linestyle=":", linewidth=1)
        ax.set_title(
            f"Trained at k={TRAIN_K}, encoded at other k (MNIST, held out)", fontsize="medium"
        )
        ax.legend(fontsize="x-small")
        save_figure(ax.figure, "adaptive_sparsity.png")
        plt.close(ax.figure)


if __name__ == "__main__":
    main()
