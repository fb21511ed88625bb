"""Helpers shared by the test modules (fixtures live in ``conftest.py``).

Import them as ``from _helpers import ...``: pytest puts this folder on ``sys.path``.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from skmpsae._models.registry import estimator_specs
from skmpsae._models.session import TrainingSession

# 72 short texts over a few topics, for the feature-page tests on MiniLM (packaged) layer 3.
MINILM_HOOK = "0.model.encoder.layer.3"
MINILM_TEXTS = [
    f"{a} {b} of the {c}"
    for a in ("pasta", "noodles", "rain", "snow", "music", "chess")
    for b in ("is good", "was cold", "sounds loud", "looks calm")
    for c in ("day", "night", "city")
]

# Every estimator, by the short name that test ids use, from the package's one registry.
ESTIMATOR_CLASSES = {name: spec.estimator for name, spec in estimator_specs().items()}
ESTIMATORS = list(ESTIMATOR_CLASSES)


def sklearn_check_estimators():
    """Every registered estimator as scikit-learn's checks run it: small, so that the ~50
    checks per estimator stay fast on their tiny data sets, every other parameter at its
    default (k=16 included: some checks set n_components=1, where the TopK family keeps every
    latent, with a warning)."""
    return [
        spec.estimator(n_components=8, max_iter=5, random_state=0, device="cpu")
        for spec in estimator_specs().values()
    ]


def estimator_factory(**defaults):
    """Return ``make(estimator, **params)``, which builds a small estimator for fast tests.

    ``estimator`` is a short name from ``ESTIMATOR_CLASSES`` or a class. Each default goes only
    to the estimators that take it (``n_nonzero_coefs`` to the k-sparse ones, ``alpha`` to the
    penalised ones); ``params`` override the defaults and are passed as given, so a bad
    parameter still reaches the estimator.
    """

    def make(estimator, **params):
        cls = ESTIMATOR_CLASSES[estimator] if isinstance(estimator, str) else estimator
        accepted = cls._get_param_names()
        base = {name: value for name, value in defaults.items() if name in accepted}
        return cls(**{**base, **params})

    return make


def new_trainer(estimator, X, *, n_steps):
    """The trainer ``estimator.fit(X)`` would run (``n_steps`` planned steps; None for
    ``partial_fit``), for tests that drive it step by step."""
    session = TrainingSession(estimator, learning_rate=estimator._learning_rate())
    return session.new_trainer(X, n_steps=n_steps)


def low_rank_data(n_samples=120, n_features=10, seed=0, dtype=np.float32):
    """Rank-3 data plus a little noise: what SAEs are meant for, and quick to fit."""
    rng = np.random.RandomState(seed)
    X = rng.rand(n_samples, 3) @ rng.randn(3, n_features) + 0.05 * rng.randn(n_samples, n_features)
    return X.astype(dtype)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(argv, world_size, timeout):
    """Start ``world_size`` processes ``python ARGV...`` as the ranks of a gloo process group
    (RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set as torchrun sets them, on a free port,
    one thread each, importing this checkout's skmpsae whatever else is installed); return
    their (exit status, stderr) once all have exited, killing any still running after
    ``timeout`` seconds."""
    port = _free_port()
    root = str(Path(__file__).resolve().parents[1])
    procs = []
    try:
        for rank in range(world_size):
            env = {
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": str(world_size),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "",
                "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, *argv],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + timeout
        results = []
        for proc in procs:
            _, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, stderr))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class RectifiedIdentity(BaseEstimator):
    """Codes ``max(X, 0)`` on the standard basis: latent j is feature j, so what a metric
    finds in the latents is known from the data alone."""

    def fit(self, X, y=None):
        self.components_ = np.eye(np.shape(X)[1])
        return self

    def transform(self, X):
        return np.maximum(np.asarray(X), 0.0)
