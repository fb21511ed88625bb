"""scikit-learn's own estimator checks over every SAE."""

import pytest
from sklearn.base import clone
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from _helpers import sklearn_check_estimators

ESTIMATORS = sklearn_check_estimators()

# Every check must pass: no expected failures.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# Checks that parametrize_with_checks leaves out (set_output, feature names, parameter
# validation, streaming); each is run explicitly. Polars is not a dependency, so its variants
# are not listed.
EXTRA_CHECKS = [
    "check_set_output_transform",
    "check_set_output_transform_pandas",
    "check_global_output_transform_pandas",
    "check_transformer_get_feature_names_out",
    "check_transformer_get_feature_names_out_pandas",
    "check_get_feature_names_out_error",
    "check_dataframe_column_names_consistency",
    "check_param_validation",
    "check_estimators_partial_fit_n_features",
    "check_estimator_cloneable",
    "check_inplace_ensure_writeable",
    "check_requires_y_none",
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda est: type(est).__name__)
@pytest.mark.parametrize("check_name", EXTRA_CHECKS)
def test_checks_left_out_by_the_generator(estimator, check_name):
    if "pandas" in check_name or check_name == "check_dataframe_column_names_consistency":
        pytest.importorskip("pandas")
    check = getattr(estimator_checks, check_name)
    check(type(estimator).__name__, clone(estimator))
