"""Batched OMP against scikit-learn's ``SparseCoder(transform_algorithm="omp")``.

1,024 atoms (centred, normalised MNIST digits), k=32, 10,000 rows to encode: the 3,976 digits
not used as atoms, and copies of them shifted by one pixel, so that no row equals an atom.
Both encoders get the same float32 data and the same thread count; times are wall-clock seconds,
best of 3, the two methods alternating. ``skmpsae``'s time includes its Gram matrix; so does
``SparseCoder``'s (it computes ``D D^T`` on every ``transform``).

Writes the tables ``omp-goal`` and ``omp`` of ``docs/performance.md`` (``--no-write`` only
prints them). Run: ``.venv/bin/python benchmarks/bench_omp.py`` (about 2 minutes with one
thread).
"""

import numpy as np
from _common import goal_table, limit_threads, markdown_table, parser, timed, write_table

N_COMPONENTS, K, N_ROWS = 1024, 32, 10_000
LABELS = {
    "skmpsae": "skmpsae.orthogonal_matching_pursuit (batched, torch)",
    "sklearn": 'sklearn SparseCoder(transform_algorithm="omp")',
}
# Issue 3's goal: batched OMP against scikit-learn's, same codes.
GOAL_SPEEDUP = 10


def make_data():
    from skmpsae.datasets import load_mnist

    X = load_mnist().data.astype(np.float32)
    X = X - X.mean(axis=0)
    perm = np.random.RandomState(0).permutation(X.shape[0])
    atoms = X[perm[:N_COMPONENTS]]
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    rest = X[perm[N_COMPONENTS:]]
    rows = np.concatenate([rest, np.roll(rest, 1, axis=1), np.roll(rest, -1, axis=1)])
    return np.ascontiguousarray(rows[:N_ROWS]), atoms


def summarise(times):
    """One row per encoder from its times (``times``: encoder -> seconds of each run)."""
    sklearn = min(times["sklearn"])
    return [
        {
            "method": LABELS[name],
            "seconds": min(runs),
            "per_sample_ms": 1e3 * min(runs) / N_ROWS,
            "speedup": sklearn / min(runs),
            "range": f"{min(runs):.1f}-{max(runs):.1f}",
        }
        for name, runs in times.items()
    ]


def omp_table(rows, codes, threads, repeats):
    """The times, and how the codes compare (``codes``: ``same`` support fraction, largest
    code ``difference`` and ``largest`` code)."""
    caption = (
        f"OMP, {N_ROWS} MNIST rows x 784 features, {N_COMPONENTS} atoms, k={K}, float32, "
        f"{threads} thread(s); wall-clock best of {repeats}."
    )
    table = markdown_table(
        rows,
        [
            ("method", "encoder", ""),
            ("seconds", "seconds", ".2f"),
            ("per_sample_ms", "ms / sample", ".3f"),
            ("speedup", "speed-up", ".1f"),
            ("range", f"range over the {repeats} runs (s)", ""),
        ],
    )
    same = (
        f"Same support as sklearn on {codes['same']:.2%} of rows; max |code difference| "
        f"{codes['difference']:.2e} (largest code {codes['largest']:.2f})."
    )
    return f"{caption}\n\n{table}\n\n{same}"


def goal_summary(rows, codes):
    """Issue 3's OMP goal."""
    speedup = rows[0]["speedup"]
    return goal_table(
        [
            {
                "goal": f"Batched OMP, {N_COMPONENTS:,} atoms, k={K}, {N_ROWS:,} rows: "
                f'>= {GOAL_SPEEDUP}x faster than `SparseCoder(transform_algorithm="omp")`, '
                "same codes",
                "measured": f"**{speedup:.1f}x**; same support on {codes['same']:.2%} of rows, "
                f"codes within {codes['difference']:.1e}",
                "met": "yes" if speedup >= GOAL_SPEEDUP and codes["same"] == 1 else "no",
            }
        ],
        "goal (issue 3), `bench_omp.py`",
    )


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    from sklearn.decomposition import SparseCoder

    from skmpsae import orthogonal_matching_pursuit

    X, atoms = make_data()
    coder = SparseCoder(atoms, transform_algorithm="omp", transform_n_nonzero_coefs=K)
    times = {"skmpsae": [], "sklearn": []}
    for repeat in range(args.repeats):
        ours, seconds = timed(orthogonal_matching_pursuit, X, atoms, n_nonzero_coefs=K)
        times["skmpsae"].append(seconds)
        theirs, seconds = timed(coder.transform, X)
        times["sklearn"].append(seconds)
        print(
            f"repeat {repeat + 1}: skmpsae {times['skmpsae'][-1]:.2f}s, "
            f"sklearn {times['sklearn'][-1]:.2f}s",
            flush=True,
        )
    codes = {
        "same": float(np.all((ours != 0) == (theirs != 0), axis=1).mean()),
        "difference": float(np.abs(ours - theirs).max()),
        "largest": float(np.abs(theirs).max()),
    }
    rows = summarise(times)
    table, goal = omp_table(rows, codes, args.threads, args.repeats), goal_summary(rows, codes)
    print(f"\n{table}\n\n{goal}")
    if not args.no_write:
        write_table("omp-goal", goal, page="performance.md")
        write_table("omp", table, page="performance.md")


if __name__ == "__main__":
    main()
