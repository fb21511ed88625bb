"""Ground-truth metrics (SynthSAEBench) against SAELens's own implementations on the same
inputs, and the SynthSAEBench data built with SAELens's generator."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from numpy.testing import assert_allclose, assert_array_equal

from skmpsae import TopKSAE
from skmpsae.datasets import make_synthsaebench
from skmpsae.metrics import (
    detection_scores,
    explained_variance,
    feature_uniqueness,
    ground_truth_scores,
    mean_correlation_coefficient,
    shrinkage,
)

evals = pytest.importorskip("sae_lens.synthetic.evals")


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


@pytest.fixture
def world():
    """Atoms (with a zero atom, a duplicate and a sign flip), true features, truth and codes."""
    rng = np.random.RandomState(0)
    F = rng.randn(40, 12)
    near = F[:20] + 0.3 * rng.randn(20, 12)
    D = np.vstack([near, -F[3], F[3] * 2, np.zeros(12), rng.randn(7, 12)])
    truth = rng.rand(500, 40) * (rng.rand(500, 40) < 0.2)
    codes = (rng.rand(500, D.shape[0]) < 0.15) * rng.randn(500, D.shape[0])
    codes[:, 22] = 0.0  # a dead latent
    return D, F, truth, codes


def test_mcc_and_uniqueness_equal_saelens(world):
    D, F, _, _ = world
    for a, b in [(D, F), (F, D), (D[:5], F)]:
        assert mean_correlation_coefficient(a, b) == pytest.approx(
            evals.mean_correlation_coefficient(_t(a), _t(b)), abs=1e-6
        )
        assert feature_uniqueness(a, b) == pytest.approx(
            evals.feature_uniqueness(_t(a), _t(b)), abs=1e-6
        )


def test_mcc_and_uniqueness_exact_values():
    F = np.eye(4)
    assert mean_correlation_coefficient(-F[::-1], F) == 1.0
    # Two atoms on the same feature: one-to-one matching gives the second its best other cosine.
    D = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0.6, 0.8, 0]])
    assert mean_correlation_coefficient(D, F) == pytest.approx((1 + 0.0 + 0.8) / 3)
    assert feature_uniqueness(D, F) == pytest.approx(2 / 3)


@pytest.mark.parametrize("sparse_input", [False, True])
def test_detection_scores_equal_saelens(world, sparse_input):
    D, F, truth, codes = world
    expected = evals.compute_classification_metrics(_t(codes), _t(truth), _t(D), _t(F))
    c, t = (sp.csr_matrix(codes), sp.csr_matrix(truth)) if sparse_input else (codes, truth)
    scores = detection_scores(c, t, D, F, batch_size=37)
    for name in ("precision", "recall", "f1_score", "accuracy"):
        ours = scores.f1 if name == "f1_score" else scores[name]
        assert ours == pytest.approx(getattr(expected, name), abs=1e-6)
    assert scores.f1_per_component[22] == 0.0


def test_detection_scores_equal_a_naive_loop(world):
    D, F, truth, codes = world
    scores = detection_scores(codes, truth, D, F)
    cos = np.abs((D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-8)) @ F.T)
    for j in range(D.shape[0]):
        match = int(np.argmax(cos[j] / np.linalg.norm(F, axis=1)))
        fires, present = codes[:, j] != 0, truth[:, match] > 0
        tp = np.sum(fires & present)
        p = tp / fires.sum() if fires.sum() else 0.0
        r = tp / present.sum() if present.sum() else 0.0
        assert scores.precision_per_component[j] == pytest.approx(p)
        assert scores.recall_per_component[j] == pytest.approx(r)
        assert scores.f1_per_component[j] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)


def test_shrinkage_equals_saelens():
    rng = np.random.RandomState(1)
    X = rng.randn(50, 6)
    X[4] = 0.0  # skipped, as SAELens skips it
    X_hat = 0.8 * X + 0.1 * rng.randn(50, 6)
    calculator = evals.ShrinkageCalculator()
    calculator.add_batch(_t(X_hat), _t(X))
    assert shrinkage(X, X_hat) == pytest.approx(calculator.compute(), abs=1e-6)
    with pytest.raises(ValueError, match="undefined"):
        shrinkage(np.zeros((2, 3)), np.ones((2, 3)))


def test_validation_messages(world):
    D, F, truth, codes = world
    with pytest.raises(ValueError, match="same number of columns"):
        mean_correlation_coefficient(D[:, :5], F)
    with pytest.raises(ValueError, match="same number of rows"):
        detection_scores(codes[:10], truth, D, F)
    with pytest.raises(ValueError, match="codes has 10 columns"):
        detection_scores(codes[:, :10], truth, D, F)
    with pytest.raises(ValueError, match="NaN"):
        feature_uniqueness(np.full_like(D, np.nan), F)


@pytest.fixture(scope="module")
def tiny():
    return make_synthsaebench(
        6000, n_true_features=256, n_features=32, orthogonalization_steps=0, random_state=0
    )


def test_make_synthsaebench_is_saelens_generator(tiny):
    assert tiny.data.dtype == np.float32 and tiny.data.shape == (6000, 32)
    assert sp.issparse(tiny.activations) and tiny.activations.shape == (6000, 256)
    assert_allclose(tiny.activations @ tiny.features + tiny.bias, tiny.data, atol=1e-5)
    assert_allclose(np.linalg.norm(tiny.features, axis=1), 1.0, atol=1e-5)
    assert np.linalg.norm(tiny.bias) == pytest.approx(0.5, rel=1e-5)
    assert tiny.config["hierarchy"]["total_root_nodes"] == 2
    # Frequent features fire more often (Zipfian), as their probabilities say.
    rates = np.asarray((tiny.activations > 0).mean(axis=0)).ravel()
    assert rates[:10].mean() > 5 * rates[-100:].mean()
    state = torch.random.get_rng_state()
    kwargs = dict(n_true_features=256, n_features=32, orthogonalization_steps=0)
    first, again = (make_synthsaebench(300, random_state=0, **kwargs) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's global RNG untouched
    assert_array_equal(again.data, first.data)
    assert_array_equal((again.activations != first.activations).nnz, 0)
    other = make_synthsaebench(300, random_state=1, **kwargs)
    assert_array_equal(other.features, tiny.features)  # same world, other samples
    assert not np.array_equal(other.data, first.data)


def test_make_synthsaebench_validation():
    with pytest.raises(ValueError, match="n_true_features"):
        make_synthsaebench(10, n_true_features=64)
    with pytest.raises(ValueError, match="config"):
        make_synthsaebench(10, config="huge")


def test_ground_truth_scores_equal_saelens_eval(tiny, tmp_path):
    """End to end: a fitted skmpsae SAE exported to SAELens scores the same with SAELens's
    eval_sae_on_synthetic_data (which draws its own samples: we redraw them with its seed)."""
    from sae_lens import SAE
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig

    from skmpsae.io import to_saelens

    sae = TopKSAE(n_components=64, n_nonzero_coefs=6, max_iter=3, random_state=0).fit(tiny.data)
    ours = ground_truth_scores(sae, tiny.data, tiny.activations, tiny.features, batch_size=999)
    codes = sae.transform(tiny.data)
    assert ours.explained_variance == pytest.approx(
        explained_variance(tiny.data, sae.inverse_transform(codes)), abs=1e-6
    )
    per_part = detection_scores(codes, tiny.activations, sae.components_, tiny.features)
    assert ours.f1 == per_part.f1
    assert ours.n_dead == int(np.sum(~(codes != 0).any(axis=0)))

    to_saelens(sae, tmp_path / "sae", hook_name="blocks.0.hook_resid_post")
    saelens_sae = SAE.load_from_disk(tmp_path / "sae")
    model = SyntheticModel(SyntheticModelConfig.from_dict(tiny.config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        result = evals.eval_sae_on_synthetic_data(
            saelens_sae, model.feature_dict, model.activation_generator, num_samples=3000
        )
        torch.manual_seed(7)
        hidden, truth = model.sample_with_features(3000)
    ours = ground_truth_scores(sae, hidden.numpy(), truth.numpy(), tiny.features)
    assert ours.mcc == pytest.approx(result.mcc, abs=1e-6)
    assert ours.uniqueness == pytest.approx(result.uniqueness, abs=1e-6)
    assert ours.f1 == pytest.approx(result.classification.f1_score, abs=1e-6)
    assert ours.precision == pytest.approx(result.classification.precision, abs=1e-6)
    assert ours.recall == pytest.approx(result.classification.recall, abs=1e-6)
    assert ours.n_dead == result.dead_latents
    assert ours.l0 == pytest.approx(result.sae_l0, abs=1e-6)
    assert ours.true_l0 == pytest.approx(result.true_l0, abs=1e-6)
    # SAELens runs its SAE in float32: reconstructions agree to float32 rounding.
    assert ours.shrinkage == pytest.approx(result.shrinkage, abs=1e-5)
    assert ours.explained_variance == pytest.approx(result.explained_variance, abs=1e-5)


def test_cli_synth_writes_data_and_scores_a_fitted_model(tmp_path, capsys):
    import json

    from skmpsae.cli import main

    small = ["--n-true-features", "256", "--n-features", "32", "--orthogonalization-steps", "0"]
    assert main(["synth", str(tmp_path), "--n-samples", "2000", *small]) == 0
    X = np.load(tmp_path / "data.npy")
    truth = sp.load_npz(tmp_path / "true_activations.npz")
    features = np.load(tmp_path / "true_features.npy")
    assert X.shape == (2000, 32) and truth.shape == (2000, 256) and features.shape == (256, 32)
    offset = X - truth @ features  # the world's bias, the same in every row
    assert_allclose(offset, np.broadcast_to(offset[0], X.shape), atol=1e-4)
    model = tmp_path / "m.joblib"
    assert (
        main(
            [
                "fit",
                str(tmp_path / "data.npy"),
                "--n-components",
                "32",
                "--k",
                "4",
                "--max-iter",
                "2",
                "-q",
                "-o",
                str(model),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["synth", str(tmp_path), "--score", str(model)]) == 0
    printed = json.loads(capsys.readouterr().out)
    import joblib

    expected = ground_truth_scores(joblib.load(model), X, truth, features)
    assert printed["f1"] == pytest.approx(expected.f1, abs=1e-6)
    assert printed["mcc"] == pytest.approx(expected.mcc, abs=1e-6)
    # A directory without the files: one line naming what is missing, exit 1.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["synth", str(empty), "--score", str(model)]) == 1
    assert "missing data.npy" in capsys.readouterr().err
    assert main(["synth", str(tmp_path), "--n-true-features", "64"]) == 1
    assert "--n-true-features" in capsys.readouterr().err
