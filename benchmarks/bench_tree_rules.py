"""Which parent rule recovers the toy hierarchy from matching pursuit's selections?

On :func:`skmpsae.datasets.make_hierarchical_features` (the settings of ``bench_inspect.py
--part tree``: 20 atoms, k=2, 30 epochs, ``threshold=1e-3``), MP-SAE's pair counts are read
with several rules for "``i`` is the parent of ``j``", each keeping the candidate with the
largest ``P(i | j)`` among those the rule admits, if at least the threshold:

- frequency (``atom_hierarchy``'s rule): ``i`` fires more often than ``j``;
- step order (the rule issue 28 proposes): ``i`` was selected before ``j`` in most of the
  rows that select both;
- mean step: ``i``'s mean pursuit step is earlier than ``j``'s;
- frequency and step order together.

Scored by ``hierarchy_recovery`` (the share of the 9 true links recovered, atoms matched one to
one to the features), with learned atoms and with the true features as atoms.
"""

import numpy as np
from _common import MeanSD, limit_threads, markdown_table, parser, write_table

RULES = ("frequency", "step order", "mean step", "frequency and step order")


def parents(rule, stats, threshold):
    freq = stats.frequency
    before = stats.pair_counts.toarray().astype(float)  # [i, j]: i selected before j
    steps = stats.selection_steps
    mean_step = (steps * np.arange(1, steps.shape[1] + 1)).sum(1) / np.maximum(steps.sum(1), 1)
    P = (before + before.T) / np.maximum(freq[None, :], 1)  # P[i, j] = P(i | j)
    K = freq.size
    out = np.full(K, -1)
    for j in range(K):
        ok = np.arange(K) != j
        more = (freq > freq[j]) | ((freq == freq[j]) & (np.arange(K) < j))
        first = before[:, j] > before[j, :]
        ok &= {
            "frequency": more,
            "step order": first,
            "mean step": mean_step < mean_step[j],
            "frequency and step order": more & first,
        }[rule]
        if ok.any():
            cand = np.where(ok, P[:, j], -1.0)
            i = int(np.argmax(cand))
            if cand[i] >= threshold:
                out[j] = i
    return out


def measure(seeds):
    from skmpsae import MatchingPursuitSAE
    from skmpsae.datasets import make_hierarchical_features
    from skmpsae.inspect import feature_statistics, hierarchy_recovery

    common = {"n_nonzero_coefs": 2, "fit_intercept": False, "learning_rate": 1e-2}
    scores = {}
    for seed in seeds:
        X, F, _, tree = make_hierarchical_features(4000, random_state=seed, return_tree=True)
        X = X.astype(np.float32)
        for atoms, extra in (
            ("learned", {"max_iter": 30}),
            ("true features", {"max_iter": 1, "learning_rate": 1e-9, "dict_init": F}),
        ):
            sae = MatchingPursuitSAE(20, random_state=seed, **{**common, **extra}).fit(X)
            stats = feature_statistics(sae, X, threshold=1e-3)
            for rule in RULES:
                for threshold in (0.5, 0.3):
                    parent = parents(rule, stats, threshold)
                    recall = hierarchy_recovery(sae.components_, parent, F, tree.parent_of)[0]
                    scores.setdefault((atoms, rule, threshold), []).append(recall)
        print(f"seed {seed} done", flush=True)
    rows = [
        {"atoms": a, "rule": r, "threshold": t, "recall": MeanSD(v)}
        for (a, r, t), v in scores.items()
    ]
    return markdown_table(
        rows,
        [
            ("atoms", "MP-SAE atoms", ""),
            ("rule", "parent rule", ""),
            ("threshold", "min P(parent given child)", ""),
            ("recall", "true links recovered", ".2f"),
        ],
    )


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    table = measure(range(args.seeds))
    print(table)
    if not args.no_write:
        write_table("inspect-tree-rules", table, page="inspecting.md")


if __name__ == "__main__":
    main()
