"""Early stopping on MNIST: held-out R2, epochs run and fit time with and without it.

``MatchingPursuitSAE`` and ``TopKSAE`` at their defaults (256 atoms, k=16, 50 epochs) on the
4,000/1,000 MNIST split, with ``early_stopping`` False and True (defaults otherwise:
``validation_fraction=0.1, n_iter_no_change=10, tol=1e-4``), ``--seeds`` seeds. Writes the
table ``early-stopping`` of ``docs/benchmarks.md``.
Run: ``python benchmarks/bench_early_stopping.py`` (about 1 minute single-threaded).
"""

import numpy as np
from _common import (
    aggregate,
    limit_threads,
    markdown_table,
    mnist_split,
    parser,
    timed,
    write_table,
)

from skmpsae import MatchingPursuitSAE, TopKSAE


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    rows = []
    for seed in range(args.seeds):
        X_train, X_test = mnist_split(seed)
        for cls in (MatchingPursuitSAE, TopKSAE):
            for early in (False, True):
                model, t = timed(cls(256, early_stopping=early, random_state=seed).fit, X_train)
                best = np.argmax(model.validation_scores_) + 1 if early else None
                rows.append(
                    {
                        "model": cls.__name__,
                        "early_stopping": str(early),
                        "r2": model.score(X_test),
                        "epochs": model.n_iter_,
                        "best_epoch": best,
                        "fit_s": t,
                    }
                )
        print(f"seed {seed} done", flush=True)
    table = markdown_table(
        aggregate(rows, ["model", "early_stopping"]),
        [
            ("model", "model", ""),
            ("early_stopping", "early_stopping", ""),
            ("r2", "held-out R2", ".4f"),
            ("epochs", "epochs run", ".1f"),
            ("best_epoch", "best epoch", ".1f"),
            ("fit_s", "fit time (s)", ".1f"),
        ],
    )
    print(table)
    if not args.no_write:
        write_table("early-stopping", table)


if __name__ == "__main__":
    main()
