"""scikit-learn's own estimator checks over every SAE."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skmpsae import MatchingPursuitSAE, ReLUSAE, TopKSAE

# Small models so that the ~50 checks per estimator stay fast; the checks use tiny data sets.
ESTIMATORS = [
    MatchingPursuitSAE(n_components=8, n_nonzero_coefs=3, max_iter=5, random_state=0, device="cpu"),
    TopKSAE(n_components=8, n_nonzero_coefs=3, max_iter=5, random_state=0, device="cpu"),
    ReLUSAE(n_components=8, max_iter=5, random_state=0, device="cpu"),
]

# Every check must pass: no expected failures.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
