"""The one list of skmpsae's estimators.

Everything that enumerates the estimators reads it here: the package's exports, the command
line's ``--model`` choices and help, ``skmpsae compare``, :mod:`skmpsae.io` (which class a file
names), the io layer's table of conversions to other formats (keyed by the short names), the
tests and the benchmarks. A new estimator is one model file and one :func:`register` call; it
has no SAELens export until ``skmpsae/_io/conversions.py`` gives it one.
"""

from dataclasses import dataclass

from .batchtopk import BatchTopKSAE
from .jumprelu import JumpReLUSAE
from .matching_pursuit import MatchingPursuitSAE
from .matryoshka import MatryoshkaSAE
from .relu import ReLUSAE
from .topk import TopKSAE


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator as the rest of the package sees it.

    Attributes
    ----------
    name : str
        Short name: the command line's ``--model`` value and ``compare``'s model name.
    estimator : type
        The estimator class.
    sparsity : {"n_nonzero_coefs", "alpha"}
        The parameter that sets sparsity: a number of non-zero codes (``--k`` on the command
        line) or a penalty whose L0 emerges in training (``--alpha``).
    sparsity_scope : str
        How the sparsity applies, as ``compare``'s table says it ("" for per sample).
    """

    name: str
    estimator: type
    sparsity: str
    sparsity_scope: str = ""

    @property
    def penalised(self) -> bool:
        return self.sparsity == "alpha"


_REGISTRY = {}


def register(spec) -> EstimatorSpec:
    """Add ``spec`` to the registry (a name or class registered twice is an error)."""
    if spec.sparsity not in ("n_nonzero_coefs", "alpha"):
        raise ValueError(f"sparsity must be 'n_nonzero_coefs' or 'alpha', got {spec.sparsity!r}.")
    taken = {s.estimator for s in _REGISTRY.values()}
    if spec.name in _REGISTRY or spec.estimator in taken:
        raise ValueError(f"{spec.name!r} ({spec.estimator.__name__}) is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name) -> None:
    """Remove the estimator registered as ``name`` (for tests that register their own)."""
    del _REGISTRY[name]


def estimator_specs() -> dict[str, EstimatorSpec]:
    """Every registered estimator, in registration order, by short name."""
    return dict(_REGISTRY)


def spec_of(estimator) -> EstimatorSpec:
    """The spec of an estimator class or instance; KeyError if it is not registered."""
    cls = estimator if isinstance(estimator, type) else type(estimator)
    for spec in _REGISTRY.values():
        if spec.estimator is cls:
            return spec
    raise KeyError(cls.__name__)


register(EstimatorSpec("mp", MatchingPursuitSAE, "n_nonzero_coefs"))
register(EstimatorSpec("topk", TopKSAE, "n_nonzero_coefs"))
register(EstimatorSpec("batchtopk", BatchTopKSAE, "n_nonzero_coefs", "per batch"))
register(EstimatorSpec("matryoshka", MatryoshkaSAE, "n_nonzero_coefs", "per batch"))
register(EstimatorSpec("jumprelu", JumpReLUSAE, "alpha"))
register(EstimatorSpec("relu", ReLUSAE, "alpha"))
