"""Batched OMP against scikit-learn's ``SparseCoder(transform_algorithm="omp")``.

1,024 atoms (centred, normalised MNIST digits), k=32, 10,000 rows to encode: the 3,976 digits
not used as atoms, and copies of them shifted by one pixel, so that no row equals an atom.
Both encoders get the same float32 data and the same thread count; times are wall-clock seconds,
best of 3, the two methods alternating. ``skmpsae``'s time includes its Gram matrix; so does
``SparseCoder``'s (it computes ``D D^T`` on every ``transform``).

Run: ``.venv/bin/python benchmarks/bench_omp.py`` (about 2 minutes with one thread).
"""

import numpy as np
from _common import limit_threads, markdown_table, parser, timed

N_COMPONENTS, K, N_ROWS = 1024, 32, 10_000


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
        print(f"repeat {repeat + 1}: skmpsae {times['skmpsae'][-1]:.2f}s, "
              f"sklearn {times['sklearn'][-1]:.2f}s", flush=True)
    same_support = np.all((ours != 0) == (theirs != 0), axis=1)
    scale = np.abs(theirs).max()
    rows = [
        {"method": "skmpsae.orthogonal_matching_pursuit (batched, torch)",
         "seconds": min(times["skmpsae"])},
        {"method": 'sklearn SparseCoder(transform_algorithm="omp")',
         "seconds": min(times["sklearn"])},
    ]
    for row in rows:
        row["per_sample_ms"] = 1e3 * row["seconds"] / N_ROWS
        row["speedup"] = rows[1]["seconds"] / row["seconds"]
    print(f"\nOMP, {N_ROWS} MNIST rows x 784 features, {N_COMPONENTS} atoms, k={K}, float32, "
          f"{args.threads} thread(s); wall-clock best of {args.repeats}")
    print(markdown_table(rows, [
        ("method", "encoder", ""), ("seconds", "seconds", ".2f"),
        ("per_sample_ms", "ms / sample", ".3f"), ("speedup", "speed-up", ".1f"),
    ]))
    print(f"same support as sklearn on {same_support.mean():.2%} of rows; "
          f"max |code difference| {np.abs(ours - theirs).max():.2e} "
          f"(largest code {scale:.2f})")


if __name__ == "__main__":
    main()
