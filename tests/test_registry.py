"""The registry of estimators is the package's one list: a new estimator registered there
appears in the command line, in compare, in save/load and in scikit-learn's checks."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator

from _helpers import low_rank_data, sklearn_check_estimators
from skmpsae import ReLUSAE, io
from skmpsae._cli.compare import compare_models, model_names
from skmpsae._models.registry import EstimatorSpec, estimator_specs, register, unregister
from skmpsae.cli import main


class TinyReLUSAE(ReLUSAE):
    """A seventh estimator: a model file's class, registered with one line."""


@pytest.fixture
def registered():
    spec = register(EstimatorSpec("tinyrelu", TinyReLUSAE, "alpha"))
    yield spec
    unregister("tinyrelu")
    assert "tinyrelu" not in estimator_specs()


def test_a_registered_estimator_is_everywhere(registered, tmp_path, capsys):
    X = low_rank_data(64, 6)
    data = tmp_path / "X.npy"
    np.save(data, X)
    # The command line: a --model choice, fitted and saved.
    out = tmp_path / "tiny.safetensors"
    args = ["fit", str(data), "--model", "tinyrelu", "--n-components", "8", "--max-iter", "2"]
    assert main([*args, "--random-state", "0", "-q", "-o", str(out)]) == 0
    assert "TinyReLUSAE: 2 epochs" in capsys.readouterr().out
    # --k is refused as for the other penalised models.
    assert main([*args, "--k", "3", "-o", str(out)]) == 2
    assert "--k applies to --model" in capsys.readouterr().err
    # save/load: the file names the class, and load finds it through the registry.
    loaded = io.load(out)
    assert type(loaded) is TinyReLUSAE and loaded.n_iter_ == 2
    # Exports are conversions the io layer knows by name: none for a new estimator, in a line.
    no_export = "TinyReLUSAE has no SAELens export; the estimators that have one: Matching"
    with pytest.raises(ValueError, match=no_export):
        io.to_saelens(loaded, tmp_path / "saelens")
    assert main(["export", str(out), "-o", str(tmp_path / "saelens")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"skmpsae export: error: {no_export}") and err.count("\n") == 1
    assert not (tmp_path / "saelens" / "cfg.json").exists()
    # compare fits it beside the others.
    assert "tinyrelu" in model_names()
    rows = compare_models(X, X, models=["tinyrelu"], n_components=8, max_iter=2, device="cpu")
    assert [row["model"] for row in rows] == ["TinyReLUSAE"]
    assert rows[0]["sparsity"].startswith("alpha=")
    # scikit-learn's checks run over it as over the six.
    checked = sklearn_check_estimators()
    assert [type(est) for est in checked][-1] is TinyReLUSAE
    check_estimator(checked[-1])


def test_register_refuses_a_name_or_class_twice(registered):
    with pytest.raises(ValueError, match="'tinyrelu' .* is already registered"):
        register(EstimatorSpec("tinyrelu", ReLUSAE, "alpha"))
    with pytest.raises(ValueError, match="'relu2' .*ReLUSAE.* is already registered"):
        register(EstimatorSpec("relu2", ReLUSAE, "alpha"))
    with pytest.raises(ValueError, match="sparsity must be 'n_nonzero_coefs' or 'alpha'"):
        register(EstimatorSpec("other", TinyReLUSAE, "k"))


@pytest.mark.parametrize("spec", list(estimator_specs().values()), ids=lambda s: s.name)
def test_defaults_pass_check_estimator(spec):
    """check_estimator(Est()) passes at the defaults, as scikit-learn's own estimators do
    (k=16 with checks that set n_components=1 included). One epoch keeps this fast; every
    parameter but max_iter is the default."""
    check_estimator(spec.estimator(max_iter=1, device="cpu"))
