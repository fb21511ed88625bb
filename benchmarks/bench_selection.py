"""Matching-pursuit selection paths against n_components: training epoch time, and the cost model.

For 1,024 to 65,536 atoms (768 features, k=32, batches of 1,024, 2,048 activation-like rows
from ``_common.activation_like``; dictionary initialised from the samples as the estimator
does), one training epoch of ``MatchingPursuitSAE``'s torch module (selection, differentiable
coefficients, backward, Adam) with each selection path forced, and with the automatic choice:

* ``gram``: the whole Gram matrix, recomputed at every step, up to 16,384 atoms (1 GiB, half
  of the default budget; 32,768 atoms would need 4 GiB, and 65,536 atoms 16 GiB);
* ``rows``: Gram rows computed for the atoms each batch selects (default budget);
* ``gemm``: one correlation GEMM per step, as SAE libraries write the loop;
* ``auto``: the cost model's choice within the default budget (what the estimator runs).

Writes ``docs/selection_scaling.png`` and the table ``selection`` of ``docs/performance.md``
(``--no-write`` only prints it). ``--calibrate`` instead measures the cost model's constants
(``skmpsae/_pursuit/selection.py``) on this machine, and only prints them.

Run: ``python benchmarks/bench_selection.py`` (about 15 minutes with one thread);
``python benchmarks/bench_selection.py --calibrate`` (about a minute).
"""

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

import skmpsae._models.matching_pursuit as mp_module
from skmpsae._pursuit.gram import _DEFAULT_MAX_BYTES, _BlockArgmax, _gram
from skmpsae._pursuit.selection import _select_mp

D_FEATURES, K_STEPS, BATCH, N_ROWS = 768, 32, 1024, 2048
SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
PATHS = ("gram", "rows", "gemm", "auto")


def module_and_data(n_components, seed=0):
    X = torch.from_numpy(next(activation_like(N_ROWS, D_FEATURES, seed=seed, chunk_rows=N_ROWS)))
    X = (X - X.mean(dim=0)) / X.std()
    module = mp_module._MatchingPursuitModule(
        n_components, D_FEATURES, K_STEPS, True, True, torch.float32, "cpu"
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = torch.randint(0, N_ROWS, (n_components,), generator=g)
        module.dictionary.copy_(X[rows] + 0.05 * torch.randn(n_components, D_FEATURES, generator=g))
        module.normalize()
    return module, X


def epoch(n_components, path):
    """Seconds of one epoch with the selection forced to ``path``; and the plans' methods."""
    module, X = module_and_data(n_components)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    methods, kwargs = [], {}
    if path != "auto":
        kwargs["method"] = path

    def select(*args, **kw):
        info = {}
        out = _select_mp(*args, **{**kw, **kwargs}, info=info)
        methods.append(info["plan"].method)
        return out

    original = mp_module._select_mp
    mp_module._select_mp = select
    try:
        tic = time.perf_counter()
        for start in range(0, N_ROWS, BATCH):
            loss, _ = module.loss(X[start : start + BATCH], None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            module.project_gradients()
            optimizer.step()
            module.normalize()
        return time.perf_counter() - tic, methods, module.n_distinct
    finally:
        mp_module._select_mp = original


def sweep():
    rows = []
    for n_components in SIZES:
        row = {"K": n_components}
        for path in PATHS:
            if path == "gram" and n_components**2 * 4 > _DEFAULT_MAX_BYTES // 2:
                continue
            seconds, methods, distinct = epoch(n_components, path)
            row[path] = seconds
            if path == "auto":
                row["chosen"] = "/".join(sorted(set(methods)))
                row["distinct"] = distinct
            print(f"{n_components} atoms, {path}: {seconds:.2f}s", flush=True)
        rows.append(row)
    return rows


def sweep_table(rows, threads):
    """The epoch times of every path, the automatic choice, and the per-step GEMM against it."""
    rows = [{**row, "gemm_vs_auto": row["gemm"] / row["auto"]} for row in rows]
    caption = (
        f"One training epoch: {N_ROWS} activation-like rows x {D_FEATURES} features, "
        f"k={K_STEPS}, batches of {BATCH}, float32, {threads} thread(s)."
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
                ("auto", "automatic (s)", ".2f"),
                ("chosen", "chosen", ""),
                ("distinct", "distinct atoms in the last batch", "d"),
                ("gemm_vs_auto", "GEMM per step / automatic", ".1f"),
            ],
        )
    )


def plot(rows):
    plt = use_agg()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"gram": "o-", "rows": "s-", "gemm": "^-", "auto": "k--"}
    labels = {
        "gram": "whole Gram matrix",
        "rows": "Gram rows of selected atoms",
        "gemm": "one correlation GEMM per step",
        "auto": "automatic choice",
    }
    for path in PATHS:
        points = [(r["K"], r[path]) for r in rows if path in r]
        ax.plot(*zip(*points, strict=False), styles[path], label=labels[path], alpha=0.85)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="n_components",
        ylabel=f"seconds per epoch ({N_ROWS} rows)",
        title=f"MP-SAE training epoch, {D_FEATURES} features, k={K_STEPS}, batch {BATCH}",
    )
    ax.set_xticks(SIZES, [f"{k // 1024}k" for k in SIZES])
    ax.legend()
    fig.tight_layout()
    save_figure(fig, "selection_scaling.png")


def best(fn, repeats=3):
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


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
    info = {}
    t_rows = best(lambda: _select_mp(X[:, :8], small, k, method="rows", info=info), 2)
    n_calls = -(-n // info["plan"].chunk) * k
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
