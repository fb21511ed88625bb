"""skmpsae: sparse autoencoders with a scikit-learn face and a PyTorch core.

Estimators
----------
MatchingPursuitSAE, TopKSAE, ReLUSAE

Functions
---------
matching_pursuit, orthogonal_matching_pursuit

Modules
-------
metrics, datasets, plotting (needs matplotlib)
"""

from ._matching_pursuit import MatchingPursuitSAE
from ._progress import EpochInfo
from ._pursuit import matching_pursuit, orthogonal_matching_pursuit
from ._relu import ReLUSAE
from ._topk import TopKSAE
from ._training import DivergenceError

__version__ = "0.1.0"

__all__ = [
    "DivergenceError",
    "EpochInfo",
    "MatchingPursuitSAE",
    "ReLUSAE",
    "TopKSAE",
    "matching_pursuit",
    "orthogonal_matching_pursuit",
]
