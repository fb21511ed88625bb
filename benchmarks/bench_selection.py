"""Matching-pursuit selection paths against n_components: training epoch time, the cost model
and the measured choice.

For 1,024 to 65,536 atoms (768 features, k=32, batches of 1,024, 2,048 activation-like rows
from ``_common.activation_like``; dictionary initialised from the samples as the estimator
does), one training epoch of ``MatchingPursuitSAE``'s torch module (selection, differentiable
coefficients, backward, Adam) with each ``selection_method``:

* ``gram``: the whole Gram matrix, recomputed at every step, up to 16,384 atoms (1 GiB, half
  of the default budget; 32,768 atoms would need 4 GiB, and 65,536 atoms 16 GiB);
* ``rows``: Gram rows computed for the atoms each batch selects (default budget);
* ``gemm``: one correlation GEMM per step, as SAE libraries write the loop;
* ``cost_model``: the cost model's choice per batch, without measuring (the choice before
  ``"auto"`` measured);
* ``auto`` (the default): the candidates timed on the first batch, the fastest kept. Run with
  an empty cache (a temporary ``SKMPSAE_CACHE_DIR``), so its epoch includes the measuring;
  later runs on the machine recall the choice and cost what the chosen path costs (the
  forced path's column, the same computation).

Writes ``docs/selection_scaling.png`` and the table ``selection`` of ``docs/performance.md``
(``--no-write`` only prints it). ``--calibrate`` instead measures the cost model's constants
(``skmpsae/_pursuit/selection.py``) on this machine, and only prints them.

Run: ``python benchmarks/bench_selection.py`` (about 30 minutes with one thread);
``python benchmarks/bench_selection.py --calibrate`` (about a minute).
"""

import os
import tempfile
import time

import torch
from _common import (
    activation_like,
    limit_threads,
    markdown_table,
    parser,
    save_figure,
    use_agg,
    write_table,
)
from _common import best_seconds as best

from skmpsae._models.matching_pursuit_module import _MatchingPursuitModule
from skmpsae._pursuit import autotune
from skmpsae._pursuit.gram import _DEFAULT_MAX_BYTES, _BlockArgmax, _gram
from skmpsae._pursuit.selection import _select_mp

D_FEATURES, K_STEPS, BATCH, N_ROWS = 768, 32, 1024, 2048
SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
METHODS = ("gram", "rows", "gemm", "cost_model", "auto")


def module_and_data(n_components, method, seed=0):
    X = torch.from_numpy(next(activation_like(N_ROWS, D_FEATURES, seed=seed, chunk_rows=N_ROWS)))
    X = (X - X.mean(dim=0)) / X.std()
    module = _MatchingPursuitModule(
        n_components, D_FEATURES, K_STEPS, True, True, torch.float32, "cpu",
        selection_method=method,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = torch.randint(0, N_ROWS, (n_components,), generator=g)
        module.dictionary.copy_(X[rows] + 0.05 * torch.randn(n_components, D_FEATURES, generator=g))
        module.normalize()
    return module, X


def epoch(n_components, method):
    """Seconds of one epoch with ``selection_method=method``, and the module after it."""
    module, X = module_and_data(n_components, method)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    paths = set()
    tic = time.perf_counter()
    for start in range(0, N_ROWS, BATCH):
        loss, _ = module.loss(X[start : start + BATCH], None)
        paths.add(module.last_path)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module.project_gradients()
        optimizer.step()
        module.normalize()
    return time.perf_counter() - tic, module, "/".join(sorted(paths))


def sweep():
    rows = []
    for n_components in SIZES:
        row = {"K": n_components}
        for method in METHODS:
            if method == "gram" and n_components**2 * 4 > _DEFAULT_MAX_BYTES // 2:
                continue
            with tempfile.TemporaryDirectory() as cache:
                os.environ["SKMPSAE_CACHE_DIR"] = cache  # "auto" measures: nothing recalled
                autotune._chosen.clear()
                seconds, module, paths = epoch(n_components, method)
            row[method] = seconds
            if method == "cost_model":
                row["model_path"] = paths
                row["distinct"] = module.n_distinct
            if method == "auto":
                timed = module.selection_seconds
                # A Gram matrix at hand (small dictionaries) leaves nothing to measure.
                row["auto_path"] = module.selection_path or module.last_path
                row["measuring"] = sum(timed.values()) - timed.get(row["auto_path"], 0.0)
                row["timed"] = "/".join(sorted(timed)) or "-"
            print(f"{n_components} atoms, {method}: {seconds:.2f}s ({paths})", flush=True)
        row["later"] = row[row["auto_path"]]
        rows.append(row)
    return rows


def sweep_table(rows, threads):
    """The epoch times of every path, the cost model's and the measured choice."""
    rows = [{**row, "model_vs_later": row["cost_model"] / row["later"]} for row in rows]
    caption = (
        f"One training epoch: {N_ROWS} activation-like rows x {D_FEATURES} features, "
        f'k={K_STEPS}, batches of {BATCH}, float32, {threads} thread(s). "measured, first '
        'run" is `selection_method="auto"` with an empty cache: its epoch includes timing '
        'the candidates ("timed") on the first batch, which costs the losers\' time on that '
        'batch ("measuring"); later runs recall the choice and cost the chosen path\'s '
        'epoch ("later runs").'
    )
    return (
        caption
        + "\n\n"
        + markdown_table(
            rows,
            [
                ("K", "n_components", "d"),
                ("gram", "whole Gram (s)", ".2f"),
                ("rows", "Gram rows (s)", ".2f"),
                ("gemm", "GEMM per step (s)", ".2f"),
                ("cost_model", "cost model (s)", ".2f"),
                ("model_path", "model's path", ""),
                ("timed", "timed", ""),
                ("auto_path", "measured path", ""),
                ("auto", "measured, first run (s)", ".2f"),
                ("measuring", "measuring (s)", ".2f"),
                ("later", "later runs (s)", ".2f"),
                ("model_vs_later", "cost model / later runs", ".2f"),
                ("distinct", "distinct atoms in the last batch", "d"),
            ],
        )
    )


def plot(rows):
    plt = use_agg()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {
        "gram": "o-",
        "rows": "s-",
        "gemm": "^-",
        "cost_model": "k--",
        "later": "r:",
        "auto": "rx",
    }
    labels = {
        "gram": "whole Gram matrix",
        "rows": "Gram rows of selected atoms",
        "gemm": "one correlation GEMM per step",
        "cost_model": "cost model's choice",
        "later": "measured choice",
        "auto": "measured choice, first run (measuring included)",
    }
    for key, style in styles.items():
        points = [(r["K"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*points, strict=False), style, label=labels[key], alpha=0.85)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="n_components",
        ylabel=f"seconds per epoch ({N_ROWS} rows)",
        title=f"MP-SAE training epoch, {D_FEATURES} features, k={K_STEPS}, batch {BATCH}",
    )
    ax.set_xticks(SIZES, [f"{k // 1024}k" for k in SIZES])
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, "selection_scaling.png")


def calibrate():
    """Measure the cost model's constants (see ``skmpsae/_pursuit/selection.py``)."""
    g = torch.Generator().manual_seed(0)
    n, K, d, k = 1024, 16384, D_FEATURES, K_STEPS
    D = torch.randn(K, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    X = torch.randn(n, d, generator=g)
    first = best(lambda: X @ D.T)
    rows = best(lambda: D[:64] @ D.T)
    gram = _gram(D)
    t_gram = best(lambda: _select_mp(X, D, k, gram=gram, method="gram"), 2)
    t_gemm = best(lambda: _select_mp(X, D, k, method="gemm"), 2)
    argmax = _BlockArgmax(K, False, torch.device("cpu"))
    corr = X[:64] @ D.T
    t_argmax = best(lambda: argmax(corr)) / (64 * K)
    # Bookkeeping of the rows path: few features, so that computing rows costs next to nothing.
    small = D[:, :8] / D[:, :8].norm(dim=1, keepdim=True)
    runs = []
    t_rows = best(lambda: runs.append(_select_mp(X[:, :8], small, k, method="rows")), 2)
    n_calls = -(-n // runs[-1].plan.chunk) * k
    step_entry = (t_gram - first) / (n * K * (k - 1))
    rows_call = max(0.0, t_rows - n * K * (k - 1) * step_entry) / n_calls
    print(f"GEMM of a batch ({n} x {d} x {K}): {2 * n * d * K / first / 1e9:.1f} GFLOP/s")
    print(f"GEMM of 64 Gram rows (64 x {d} x {K}): {2 * 64 * d * K / rows / 1e9:.1f} GFLOP/s")
    print(f"argmax + fused row update: {1e9 * step_entry:.2f} ns per (row, atom) and step")
    print(
        f"argmax alone: {1e9 * t_argmax:.2f} ns per (row, atom); per-step GEMM path, "
        f"beyond its GEMMs: {1e9 * (t_gemm - k * first) / (n * K * k):.2f} ns"
    )
    print(f"rows path bookkeeping: {1e6 * rows_call:.0f} us per chunk and step")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--calibrate", action="store_true", help="measure the cost model only")
    args = p.parse_args(argv)
    limit_threads(args.threads)
    if args.calibrate:
        calibrate()
        return
    rows = sweep()
    table = sweep_table(rows, torch.get_num_threads())
    print(f"\n{table}")
    if not args.no_write:
        write_table("selection", table, page="performance.md")
    if not args.no_plot:
        plot(rows)


if __name__ == "__main__":
    main()
