"""skmpsae.io against the real SAELens (sae-lens) and sparsify (eai-sparsify) packages.

Codes are compared to float32 rounding: both sides compute the same products in a different
order (SAELens multiplies by ``W_enc`` stored transposed; skmpsae's matching pursuit updates
correlations through the Gram matrix where SAELens recomputes the residual), so they agree to a
few units in the last place, not bit for bit.
"""

import warnings

import numpy as np
import pytest
import torch

from skmpsae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TopKSAE,
)

pytest.importorskip("safetensors")
from skmpsae import io

TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def sae_lens():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("sae_lens")


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    return (rng.randn(400, 16) @ rng.randn(16, 16) + 1.0).astype(np.float32)


def _encode_decode(sae, X):
    with torch.no_grad():
        codes = sae.encode(torch.from_numpy(X))
        return codes.numpy(), sae.decode(codes).numpy()


@pytest.mark.parametrize(
    "estimator, architecture",
    [
        (TopKSAE(48, n_nonzero_coefs=6, max_iter=3, random_state=0), "TopKSAE"),
        (ReLUSAE(48, alpha=1.0, max_iter=3, random_state=0), "StandardSAE"),
        (
            MatchingPursuitSAE(48, n_nonzero_coefs=6, max_iter=3, random_state=0),
            "MatchingPursuitSAE",
        ),
        (BatchTopKSAE(48, n_nonzero_coefs=6, max_iter=3, random_state=0), "JumpReLUSAE"),
        (MatryoshkaSAE(48, n_nonzero_coefs=6, max_iter=3, random_state=0), "JumpReLUSAE"),
        (JumpReLUSAE(48, max_iter=3, random_state=0), "JumpReLUSAE"),
        (
            BatchTopKSAE(
                48, n_nonzero_coefs=6, transform_n_nonzero_coefs=5, max_iter=3, random_state=0
            ),
            "TopKSAE",
        ),
    ],
)
def test_export_loaded_by_saelens_encodes_like_the_estimator(
    estimator, architecture, X, sae_lens, tmp_path
):
    estimator.fit(X)
    if isinstance(estimator, MatchingPursuitSAE):
        estimator.set_params(transform_n_nonzero_coefs=9)  # inference steps are exported
    io.to_saelens(estimator, tmp_path / "sae", hook_name="blocks.0.hook_resid_post")
    sae = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    assert type(sae).__name__ == architecture
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    codes, reconstruction = _encode_decode(sae, X)
    expected = estimator.transform(X)
    assert 0 < (expected != 0).mean() < 0.9  # neither empty nor dense: the threshold matters
    np.testing.assert_allclose(codes, expected, **TOL)
    assert ((codes != 0) == (expected != 0)).mean() > 0.999  # same atoms, not just close values
    np.testing.assert_allclose(reconstruction, estimator.inverse_transform(expected), **TOL)


def _random_saelens(sae_lens, architecture, apply_b_dec_to_input=True, **cfg):
    from sae_lens.saes.jumprelu_sae import JumpReLUSAEConfig
    from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAEConfig
    from sae_lens.saes.standard_sae import StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAEConfig

    config = {
        "standard": StandardSAEConfig,
        "topk": TopKSAEConfig,
        "matching_pursuit": MatchingPursuitSAEConfig,
        "jumprelu": JumpReLUSAEConfig,
    }[architecture]
    sae = sae_lens.SAE.from_dict(
        config(d_in=16, d_sae=40, apply_b_dec_to_input=apply_b_dec_to_input, **cfg).to_dict()
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if "b_" in name else 1))
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
    return sae


@pytest.mark.parametrize(
    "architecture, cfg, apply_b_dec",
    [
        ("standard", {}, True),
        ("standard", {}, False),
        ("topk", {"k": 7}, True),
        ("topk", {"k": 7}, False),
        (
            "matching_pursuit",
            {"max_iterations": 8, "residual_threshold": 0.0, "stop_on_duplicate_support": False},
            True,
        ),
        ("jumprelu", {}, True),
        ("jumprelu", {}, False),
    ],
)
def test_saved_by_saelens_loads_with_the_same_codes(
    architecture, cfg, apply_b_dec, X, sae_lens, tmp_path
):
    sae = _random_saelens(sae_lens, architecture, apply_b_dec, **cfg)
    if architecture == "jumprelu":  # thresholds of both signs, on the pre-activations' scale
        with torch.no_grad():
            sae.threshold *= 10
    sae.save_model(tmp_path / "sae")
    estimator = io.from_saelens(tmp_path / "sae")
    codes, reconstruction = _encode_decode(sae, X)
    if architecture == "jumprelu":
        assert (sae.threshold < 0).any() and 0.1 < (codes != 0).mean() < 0.9
    np.testing.assert_allclose(estimator.transform(X), codes, **TOL)
    if architecture != "matching_pursuit" or apply_b_dec:
        np.testing.assert_allclose(estimator.inverse_transform(codes), reconstruction, **TOL)


def test_saelens_defaults_for_matching_pursuit_are_refused(sae_lens, tmp_path):
    _random_saelens(sae_lens, "matching_pursuit").save_model(tmp_path / "sae")
    with pytest.raises(ValueError, match="stop_on_duplicate_support"):
        io.from_saelens(tmp_path / "sae")


def test_saelens_other_architecture_is_refused(sae_lens, tmp_path):
    from sae_lens.saes.gated_sae import GatedSAEConfig

    sae_lens.SAE.from_dict(GatedSAEConfig(d_in=16, d_sae=40).to_dict()).save_model(tmp_path / "sae")
    with pytest.raises(ValueError, match="'gated' has no skmpsae estimator"):
        io.from_saelens(tmp_path / "sae")


def test_saelens_trained_batchtopk_saved_for_inference_loads(sae_lens, X, tmp_path):
    """SAELens saves a trained BatchTopK SAE for inference as JumpReLU with its running
    threshold on every latent; that file loads with the same codes."""
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    sae = BatchTopKTrainingSAE(
        BatchTopKTrainingSAEConfig(d_in=16, d_sae=40, k=4, rescale_acts_by_decoder_norm=False)
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if "b_" in name else 1))
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        sae.topk_threshold = torch.tensor(2.0)
    sae.save_inference_model(tmp_path / "sae")
    inference = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    assert type(inference).__name__ == "JumpReLUSAE"
    estimator = io.from_saelens(tmp_path / "sae")
    assert type(estimator) is JumpReLUSAE
    codes, _ = _encode_decode(inference, X)
    assert 0 < (codes != 0).mean() < 0.9
    np.testing.assert_allclose(estimator.transform(X), codes, **TOL)


@pytest.mark.parametrize("normalize_decoder", [True, False])
def test_saved_by_sparsify_loads_with_the_same_codes(normalize_decoder, X, tmp_path):
    sparsify = pytest.importorskip("sparsify")
    torch.manual_seed(0)  # sparsify initialises from torch's global generator
    coder = sparsify.SparseCoder(
        16, sparsify.SparseCoderConfig(num_latents=48, k=6, normalize_decoder=normalize_decoder)
    )
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.3)
        coder.b_dec.normal_(0, 0.3)
        if not normalize_decoder:
            coder.W_dec.mul_(torch.rand(48, 1) + 0.5)
    coder.save_to_disk(tmp_path / "layers.0")
    estimator = io.from_sparsify(tmp_path / "layers.0")
    assert isinstance(estimator, TopKSAE) and estimator.n_nonzero_coefs == 6
    with torch.no_grad():
        out = coder.encode(torch.from_numpy(X))
        codes = torch.zeros(len(X), 48).scatter_(1, out.top_indices, out.top_acts).numpy()
        reconstruction = coder.decode(out.top_acts, out.top_indices).numpy()
    np.testing.assert_allclose(estimator.transform(X), codes, **TOL)
    np.testing.assert_allclose(estimator.inverse_transform(codes), reconstruction, **TOL)


def test_sparsify_skip_connection_is_refused(tmp_path):
    sparsify = pytest.importorskip("sparsify")
    sparsify.SparseCoder(
        16, sparsify.SparseCoderConfig(num_latents=32, k=4, skip_connection=True)
    ).save_to_disk(tmp_path / "sae")
    with pytest.raises(ValueError, match="skip_connection"):
        io.from_sparsify(tmp_path / "sae")
