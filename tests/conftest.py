"""Suite-wide settings and the data fixtures that several test modules share.

The test models are small: torch's second intra-op thread costs more in synchronisation than it
gains, and on a machine where other work competes for the two cores it slows the suite several
times over. Each test module that measures thread handling sets and checks its own values.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from skmpsae.datasets import load_mnist


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 1,797 8x8 digits scaled to [0, 1], float32: small enough for many fits."""
    return (load_digits().data / 16.0).astype(np.float32)


@pytest.fixture(scope="session")
def mnist():
    """The 5,000 MNIST digits in [0, 1] as float64, in a fixed random order (the file is sorted
    by label, so any slice of it is one or two digits only)."""
    X = load_mnist().data.astype(np.float64)
    return X[np.random.RandomState(0).permutation(X.shape[0])]
