"""Effect of half-precision atom selection (``selection_dtype``) on held-out R2.

MNIST (4,000 training digits, 1,000 held out, scaled to [0, 1]), ``MatchingPursuitSAE`` with
256 and 1,024 atoms, k=16, 10 epochs, ``random_state`` 0 and 1: trained and evaluated with
``selection_dtype=None`` (float32), ``"bfloat16"`` and ``"float16"``. The dictionary, the
coefficients and the gradients stay float32 in every case; only the GEMMs that pick the atoms
round their inputs. Also the fraction of held-out rows whose atoms match the float32 encoder's
on the same (float32-trained) dictionary.

On a CPU the half-precision GEMMs are emulated (slow) but round exactly as a GPU's tensor cores
do on their inputs, so the R2 effect measured here is the one to expect on a GPU; the speed is
not (see ``bench_gpu.py``). Writes the table ``precision`` of ``docs/performance.md``
(``--no-write`` only prints it). Run: ``python benchmarks/bench_precision.py`` (about 10
minutes).
"""

import numpy as np
from _common import limit_threads, markdown_table, mnist_split, parser, write_table

from skmpsae import MatchingPursuitSAE

DTYPES = (None, "bfloat16", "float16")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    X_train, X_test = mnist_split()
    rows = []
    for n_components in (256, 1024):
        full = {}  # the float32 model of each seed
        for dtype in DTYPES:
            scores, same = [], []
            for seed in range(args.seeds):
                params = {
                    "n_components": n_components,
                    "n_nonzero_coefs": 16,
                    "max_iter": args.epochs,
                    "random_state": seed,
                    "device": "cpu",
                }
                sae = MatchingPursuitSAE(**params, selection_dtype=dtype).fit(X_train)
                scores.append(sae.score(X_test))
                if dtype is None:
                    full[seed] = sae
                else:
                    ref = full[seed].set_params(selection_dtype=None).transform(X_test) != 0
                    low = full[seed].set_params(selection_dtype=dtype).transform(X_test) != 0
                    same.append(np.all(ref == low, axis=1).mean())
            rows.append(
                {
                    "K": n_components,
                    "dtype": dtype or "float32 (None)",
                    "r2": np.mean(scores),
                    "r2_sd": np.std(scores),
                    "same": np.mean(same) if same else None,
                }
            )
            print(rows[-1], flush=True)
    table = precision_table(rows, args.epochs, args.seeds)
    print(f"\n{table}")
    if not args.no_write:
        write_table("precision", table, page="performance.md")


def precision_table(rows, epochs, seeds):
    """Held-out R2 per dictionary size and selection dtype, and the rows whose atoms match."""
    caption = f"MNIST 4k/1k, k=16, {epochs} epochs, mean of {seeds} seeds."
    return (
        caption
        + "\n\n"
        + markdown_table(
            rows,
            [
                ("K", "n_components", "d"),
                ("dtype", "selection_dtype", ""),
                ("r2", "held-out R2", ".4f"),
                ("r2_sd", "sd over seeds", ".4f"),
                ("same", "held-out rows with float32's atoms (same dictionary)", ".1%"),
            ],
        )
    )


if __name__ == "__main__":
    main()
