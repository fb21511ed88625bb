"""Dead-atom revival of MP-SAE on MiniLM activations: dead atoms and held-out R2 with and
without ``revival_coef``.

The activations of ``bench_activations.py`` (all-MiniLM-L6-v2, layer 3, cached), 4,096 atoms,
k=32, ``--epochs`` epochs (revival acts from the second epoch on: an atom counts as dead after
an epoch's worth of samples without being chosen), ``--seeds`` seeds. Writes the table
``revival`` of ``docs/benchmarks.md``.
Run: ``python benchmarks/bench_revival.py`` (about 80 seconds per seed single-threaded).
"""

from _common import aggregate, limit_threads, markdown_table, parser, timed, write_table
from bench_activations import load_activations, split

from skmpsae import MatchingPursuitSAE
from skmpsae.metrics import dead_fraction

N_COMPONENTS, K = 4096, 32


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-tokens", type=int, default=40000)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    X, passage = load_activations(args.n_tokens)
    rows = []
    for seed in range(args.seeds):
        held_out = split(passage, seed)
        X_train, X_test = X[~held_out], X[held_out]
        for coef in (0.0, 1 / 32):
            model, t = timed(
                MatchingPursuitSAE(
                    N_COMPONENTS,
                    n_nonzero_coefs=K,
                    max_iter=args.epochs,
                    revival_coef=coef,
                    random_state=seed,
                ).fit,
                X_train,
            )
            rows.append(
                {
                    "revival_coef": f"{coef:g}",
                    "r2": model.score(X_test),
                    "dead_test": dead_fraction(model.transform(X_test)),
                    "dead_train": model.n_dead_components_ / N_COMPONENTS,
                    "fit_s": t,
                }
            )
            print(f"seed {seed}, revival_coef={coef:g}: {rows[-1]}", flush=True)
    table = markdown_table(
        aggregate(rows, ["revival_coef"]),
        [
            ("revival_coef", "revival_coef", ""),
            ("r2", "held-out R2", ".4f"),
            ("dead_test", "dead fraction (held out)", ".4f"),
            ("dead_train", "dead fraction (last epoch)", ".4f"),
            ("fit_s", "fit time (s)", ".0f"),
        ],
    )
    print(table)
    if not args.no_write:
        write_table("revival", table)


if __name__ == "__main__":
    main()
