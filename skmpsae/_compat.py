"""The one door to other libraries' private APIs.

scikit-learn's parameter validation (``sklearn.utils._param_validation``), its ``_fit_context``
and ``_get_feature_names`` are private: they may move or change in any release. Every module
of the package imports them from here, so that a release that breaks one is fixed in this
file alone; CI runs the scikit-learn contract tests against the oldest supported release
and the newest (``make test-compat``). The same holds for torch: the key under which a
module's extra state is saved.
"""

from sklearn import base as _base
from sklearn.utils import _param_validation
from sklearn.utils import validation as _validation
from torch.nn.modules import module as _torch_module

__all__ = [
    "EXTRA_STATE_KEY_SUFFIX",
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "StrOptions",
    "check_parameters",
    "fit_context",
    "get_feature_names",
    "param_names",
    "validate_params",
]

HasMethods = _param_validation.HasMethods
Interval = _param_validation.Interval
InvalidParameterError = _param_validation.InvalidParameterError
StrOptions = _param_validation.StrOptions
validate_params = _param_validation.validate_params
fit_context = _base._fit_context
get_feature_names = _validation._get_feature_names

# The suffix of the state_dict key that holds what a module's get_extra_state returns.
EXTRA_STATE_KEY_SUFFIX: str = _torch_module._EXTRA_STATE_KEY_SUFFIX


def check_parameters(estimator):
    """Check ``estimator``'s parameters against its ``_parameter_constraints`` as ``fit``
    does, without fitting (for :func:`skmpsae.io.load` and the command line's ``--param``).
    Raises ``InvalidParameterError`` (a ``ValueError`` and a ``TypeError``)."""
    estimator._validate_params()


def param_names(estimator_class):
    """The names of the parameters of ``estimator_class``'s ``__init__``, sorted."""
    return estimator_class._get_param_names()
