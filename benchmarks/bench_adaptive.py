"""Adaptive sparsity: train at k=16 once, encode MNIST at k = 2..128 without refitting.

``MatchingPursuitSAE`` and ``TopKSAE`` are fitted at ``n_nonzero_coefs=16`` (defaults otherwise,
256 atoms, 4,000 training digits), then the held-out 1,000 digits are encoded with
``set_params(transform_n_nonzero_coefs=k)``:

* MP-SAE with its matching pursuit (each step can only lower the residual, so R2 must rise
  monotonically with k);
* the same MP-SAE dictionary with OMP encoding (``transform_algorithm="omp"``);
* MP-SAE stopping at a residual tolerance (``transform_tol``) instead of a fixed k, so each
  digit gets as many atoms as it needs;
* TopK, whose encoder was only ever trained to keep 16 latents.

Run: ``python benchmarks/bench_adaptive.py`` (about 1-2 minutes single-threaded).
"""

import numpy as np
from _common import limit_threads, markdown_table, mnist_split, parser, save_figure, timed, use_agg

from skmpsae import MatchingPursuitSAE, TopKSAE
from skmpsae.metrics import explained_variance, l0

TRAIN_K = 16
KS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
# Residual tolerances as fractions of the mean squared norm of a centred held-out digit.
TOL_FRACTIONS = (0.5, 0.35, 0.25, 0.15, 0.1, 0.05)


def scores(model, X):
    codes = model.transform(X)
    return explained_variance(X, model.inverse_transform(codes)), l0(codes)


def is_monotonic(values, slack=0.0):
    """True when every value is at least the previous one minus ``slack``."""
    return bool(np.all(np.diff(values) >= -slack))


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    limit_threads(args.threads)
    X_train, X_test = mnist_split()
    mp, mp_t = timed(MatchingPursuitSAE(n_nonzero_coefs=TRAIN_K, random_state=0).fit, X_train)
    topk, topk_t = timed(TopKSAE(n_nonzero_coefs=TRAIN_K, random_state=0).fit, X_train)
    print(f"fitted at k={TRAIN_K}: MP-SAE in {mp_t:.1f}s, TopK in {topk_t:.1f}s", flush=True)

    curves = {"MP-SAE, MP encoding": [], "MP-SAE, OMP encoding": [], "TopK": []}
    rows = []
    for k in KS:
        row = {"k": k}
        mp.set_params(transform_algorithm="mp", transform_n_nonzero_coefs=k)
        row["mp_r2"], row["mp_l0"] = scores(mp, X_test)
        mp.set_params(transform_algorithm="omp")
        row["omp_r2"], row["omp_l0"] = scores(mp, X_test)
        topk.set_params(transform_n_nonzero_coefs=k)
        row["topk_r2"], row["topk_l0"] = scores(topk, X_test)
        rows.append(row)
        for label, prefix in zip(curves, ("mp", "omp", "topk")):
            curves[label].append((row[f"{prefix}_l0"], row[f"{prefix}_r2"]))

    mean_energy = float(np.mean(np.sum((X_test - mp.intercept_) ** 2, axis=1)))
    tol_rows = []
    mp.set_params(transform_algorithm="mp", transform_n_nonzero_coefs=None)
    for fraction in TOL_FRACTIONS:
        mp.set_params(transform_tol=fraction * mean_energy)
        r2, mean_l0 = scores(mp, X_test)
        tol_rows.append({"fraction": fraction, "r2": r2, "l0": mean_l0})
    mp.set_params(transform_tol=None)
    curves["MP-SAE, residual tolerance"] = [(r["l0"], r["r2"]) for r in tol_rows]

    print()
    print(markdown_table(rows, [
        ("k", "encode k", "d"),
        ("mp_r2", "MP-SAE R2 (MP)", ".4f"), ("mp_l0", "L0", ".2f"),
        ("omp_r2", "MP-SAE R2 (OMP)", ".4f"), ("omp_l0", "L0", ".2f"),
        ("topk_r2", "TopK R2", ".4f"), ("topk_l0", "L0", ".2f"),
    ]))
    print()
    print(markdown_table(tol_rows, [
        ("fraction", "transform_tol / mean squared norm", ".2f"),
        ("r2", "MP-SAE R2", ".4f"), ("l0", "mean L0 reached", ".2f"),
    ]))
    print()
    mp_r2 = [r["mp_r2"] for r in rows]
    topk_r2 = [r["topk_r2"] for r in rows]
    best_topk = max(rows, key=lambda r: r["topk_r2"])
    print(f"MP-SAE held-out R2 rises monotonically over k={KS[0]}..{KS[-1]}: "
          f"{is_monotonic(mp_r2)} ({mp_r2[0]:.4f} -> {mp_r2[-1]:.4f})")
    print(f"OMP encoding monotonic: {is_monotonic([r['omp_r2'] for r in rows])}")
    print(f"TopK monotonic: {is_monotonic(topk_r2)}; its best R2 {best_topk['topk_r2']:.4f} at "
          f"k={best_topk['k']}, R2 at k={KS[-1]}: {topk_r2[-1]:.4f}")

    if not args.no_plot:
        plt = use_agg()
        from skmpsae.plotting import plot_r2_vs_l0

        ax = plot_r2_vs_l0(curves, logx=True)
        ax.axvline(TRAIN_K, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"Trained at k={TRAIN_K}, encoded at other k (MNIST, held out)",
                     fontsize="medium")
        ax.legend(fontsize="x-small")
        save_figure(ax.figure, "adaptive_sparsity.png")
        plt.close(ax.figure)


if __name__ == "__main__":
    main()
