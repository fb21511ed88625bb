"""
=========================================
Grid search on a dask.distributed cluster
=========================================

The estimators are plain scikit-learn estimators, so ``GridSearchCV`` can spread its fits over
a cluster through joblib's dask backend. Here the "cluster" is a
:class:`~dask.distributed.LocalCluster` of two single-threaded worker processes on this
machine; pointing :class:`~dask.distributed.Client` at a scheduler address runs the same code
on many machines.

Needs ``pip install -e ".[dask]"``.
"""

# %%
# Data and pipeline
# -----------------
# Scikit-learn's 8x8 digits, standardised, then a matching-pursuit SAE. The search tries three
# sparsities and two dictionary sizes, with 3-fold cross-validation: 18 fits.
import joblib
import matplotlib.pyplot as plt
import numpy as np
import torch
from dask.distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skmpsae import MatchingPursuitSAE

X = load_digits().data
pipe = Pipeline(
    [
        ("scale", StandardScaler()),
        ("sae", MatchingPursuitSAE(max_iter=10, random_state=0, device="cpu")),
    ]
)
grid = {"sae__n_nonzero_coefs": [2, 4, 8], "sae__n_components": [32, 128]}
search = GridSearchCV(pipe, grid, cv=3, n_jobs=-1)

# %%
# Fit on the cluster
# ------------------
# Inside ``parallel_config(backend="dask")`` every joblib call, including the one inside
# ``GridSearchCV``, sends its tasks to the cluster. Each worker process starts with
# ``OMP_NUM_THREADS=1``, so torch runs one thread per worker and the two workers never fight
# over the cores; the last line checks it. Worker processes re-import the script that starts
# them, hence the ``__main__`` guards.
if __name__ == "__main__":
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
        joblib.parallel_config(backend="dask"),
    ):
        search.fit(X)
        threads = joblib.Parallel(n_jobs=-1)(
            joblib.delayed(torch.get_num_threads)() for _ in range(2)
        )
    print("torch threads in the workers:", threads)
    print("best:", search.best_params_, f"held-out R2 {search.best_score_:.3f}")

# %%
# Results
# -------
# Without ``scoring=``, the search ranks by the estimator's ``score``: the held-out explained
# variance. More steps and more atoms both help; the plot shows by how much.
if __name__ == "__main__":
    results = search.cv_results_
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for n_components in grid["sae__n_components"]:
        mask = np.asarray(results["param_sae__n_components"]) == n_components
        ks = np.asarray(results["param_sae__n_nonzero_coefs"])[mask]
        ax.errorbar(
            ks,
            results["mean_test_score"][mask],
            yerr=results["std_test_score"][mask],
            marker="o",
            capsize=3,
            label=f"{n_components} atoms",
        )
    ax.set_xlabel("n_nonzero_coefs (k)")
    ax.set_ylabel("cross-validated $R^2$")
    ax.set_xscale("log", base=2)
    ax.legend()
    plt.show()
