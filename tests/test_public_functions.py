"""Every public function validates its parameters with scikit-learn's ``validate_params``.

The same contract as scikit-learn's own public functions: a declared constraint for every
parameter, and an ``InvalidParameterError`` naming the parameter for a value of the wrong type,
a value outside a declared interval, and (in skmpsae) a boolean where a number is expected.
"""

import inspect

import pytest
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    generate_invalid_param_val,
    generate_valid_param,
    make_constraint,
)

import skmpsae
from skmpsae import datasets, metrics, plotting
from skmpsae._utils import NotBoolInterval

MODULE_FUNCTIONS = [
    getattr(module, name) for module in (datasets, metrics, plotting) for name in module.__all__
]
PURSUIT_FUNCTIONS = [skmpsae.matching_pursuit, skmpsae.orthogonal_matching_pursuit]
PUBLIC_FUNCTIONS = MODULE_FUNCTIONS + PURSUIT_FUNCTIONS


# Valid values for required parameters whose first constraint scikit-learn cannot instantiate
# (an abstract type).
_VALID = {"results": {"curve": [(1.0, 0.5)]}}


class _BadType:
    """An object that satisfies no constraint."""


def _validated_params(func):
    """Yield ``(name, constraints, valid)``: each validated parameter of ``func``, its declared
    constraints, and valid values for the required parameters, to call ``func`` with."""
    declared = func._skl_parameter_constraints
    valid = {}
    for name, parameter in inspect.signature(func).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            continue
        if name in _VALID:
            valid[name] = _VALID[name]
        elif declared[name] == "no_validation":
            valid[name] = 1
        else:
            valid[name] = generate_valid_param(make_constraint(declared[name][0]))
    for name, constraints in declared.items():
        if constraints != "no_validation":
            yield name, constraints, valid


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS, ids=lambda f: f.__name__)
def test_every_parameter_has_a_constraint(func):
    constraints = getattr(func, "_skl_parameter_constraints", None)
    assert constraints is not None, f"{func.__name__} is not decorated with validate_params"
    assert set(constraints) == set(inspect.signature(func).parameters)


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS, ids=lambda f: f.__name__)
def test_invalid_parameters_raise_a_named_error(func):
    checked = 0
    for name, constraints, valid in _validated_params(func):
        match = rf"The '{name}' parameter of {func.__name__} must be .* Got .* instead\."
        bad_values = [_BadType()]
        for constraint in map(make_constraint, constraints):
            try:
                bad_values.append(generate_invalid_param_val(constraint))
            except NotImplementedError:
                pass
        for bad in bad_values:
            with pytest.raises(InvalidParameterError, match=match):
                func(**{**valid, name: bad})
            checked += 1
    assert checked > 0


def _takes_numbers(constraints):
    return constraints != "no_validation" and any(isinstance(c, Interval) for c in constraints)


NUMBER_FUNCTIONS = [
    func
    for func in MODULE_FUNCTIONS
    if any(map(_takes_numbers, func._skl_parameter_constraints.values()))
]


@pytest.mark.parametrize("func", NUMBER_FUNCTIONS, ids=lambda f: f.__name__)
def test_booleans_are_not_numbers(func):
    # Python counts True as 1, but a flag where a number is expected is a slip.
    for name, constraints, valid in _validated_params(func):
        if _takes_numbers(constraints):
            intervals = [c for c in constraints if isinstance(c, Interval)]
            assert all(isinstance(c, NotBoolInterval) for c in intervals), name
            match = rf"The '{name}' parameter of {func.__name__} must be .* Got True instead\."
            with pytest.raises(InvalidParameterError, match=match):
                func(**{**valid, name: True})
