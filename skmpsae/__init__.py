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

from ._batchtopk import BatchTopKSAE
from ._jumprelu import JumpReLUSAE
from ._matching_pursuit import MatchingPursuitSAE
from ._matryoshka import MatryoshkaSAE
from ._progress import EpochInfo
from ._pursuit import matching_pursuit, orthogonal_matching_pursuit
from ._relu import ReLUSAE
from ._topk import TopKSAE
from ._training import DivergenceError

__version__ = "0.1.0"

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
