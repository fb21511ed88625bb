"""skmpsae: sparse autoencoders with a scikit-learn face and a PyTorch core.

Estimators
----------
MatchingPursuitSAE, TopKSAE, BatchTopKSAE, MatryoshkaSAE, JumpReLUSAE, ReLUSAE

Functions
---------
matching_pursuit, orthogonal_matching_pursuit

Modules
-------
metrics, datasets, plotting (needs matplotlib)
"""

from ._models.batchtopk import BatchTopKSAE
from ._models.jumprelu import JumpReLUSAE
from ._models.matching_pursuit import MatchingPursuitSAE
from ._models.matryoshka import MatryoshkaSAE
from ._models.relu import ReLUSAE
from ._models.topk import TopKSAE
from ._pursuit.encode import matching_pursuit, orthogonal_matching_pursuit
from ._train.progress import EpochInfo
from ._train.tensors import DivergenceError
from ._version import __version__ as __version__

__all__ = [
    "BatchTopKSAE",
    "DivergenceError",
    "EpochInfo",
    "JumpReLUSAE",
    "MatchingPursuitSAE",
    "MatryoshkaSAE",
    "ReLUSAE",
    "TopKSAE",
    "matching_pursuit",
    "orthogonal_matching_pursuit",
]
