"""Suite-wide settings.

The test models are small: torch's second intra-op thread costs more in synchronisation than it
gains, and on a machine where other work competes for the two cores it slows the suite several
times over. Each test module that measures thread handling sets and checks its own values.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
