"""SynthSAEBench data built with SAELens's own generator (``sae_lens.synthetic``).

Published as :func:`skmpsae.datasets.make_synthsaebench`. Nothing is downloaded: the
``SyntheticModel`` is built from its configuration, which SAELens's documentation gives in full
for SynthSAEBench-16k (Chanin & Garriga-Alonso, arXiv:2602.14687).
"""

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils import Bunch, check_random_state

# The published SynthSAEBench-16k world, and a quarter-size one with the same structure that a
# laptop CPU trains in minutes. "scaled" keeps the ratio of dimensions to features (768/16,384),
# the hierarchy's share of the features (128 roots of 85 nodes per 16,384) and the true L0
# (~32 against ~34: the Zipfian probabilities are doubled, since with a quarter of the features
# at exponent 0.5 the same probabilities would give half the L0).
_CONFIGS = {
    "full": dict(n_true_features=16384, n_features=768, max_prob=0.4, min_prob=5e-4),
    "scaled": dict(n_true_features=4096, n_features=192, max_prob=0.8, min_prob=1e-3),
}
_ORTHOGONALIZATION_STEPS = 100
_SAMPLE_CHUNK = 8192


def _import_synthetic():
    try:
        import sae_lens.synthetic as synthetic
        from sae_lens.synthetic.synthetic_model import (
            LowRankCorrelationConfig,
            OrthogonalizationConfig,
        )
    except ImportError as exc:
        raise ImportError(
            "make_synthsaebench builds the data with SAELens's generator (sae_lens.synthetic); "
            "install it from the skmpsae checkout with: pip install -e '.[interop]'"
        ) from exc
    return synthetic, LowRankCorrelationConfig, OrthogonalizationConfig


def synthsaebench_config(config, n_true_features=None, n_features=None, orthogonalization=None):
    """The ``SyntheticModelConfig`` of a preset, with the sizes overridden where given."""
    synthetic, LowRankCorrelationConfig, OrthogonalizationConfig = _import_synthetic()
    preset = _CONFIGS[config]
    n_true = preset["n_true_features"] if n_true_features is None else n_true_features
    steps = _ORTHOGONALIZATION_STEPS if orthogonalization is None else orthogonalization
    return synthetic.SyntheticModelConfig(
        num_features=n_true,
        hidden_dim=preset["n_features"] if n_features is None else n_features,
        firing_probability=synthetic.ZipfianFiringProbabilityConfig(
            exponent=0.5, max_prob=preset["max_prob"], min_prob=preset["min_prob"]
        ),
        # 128 trees per 16,384 features, 4 children each, 3 levels below the root (85 nodes),
        # all children of a parent mutually exclusive, children scaled by their parent.
        hierarchy=synthetic.HierarchyConfig(
            total_root_nodes=n_true // 128,
            branching_factor=4,
            max_depth=3,
            mutually_exclusive_portion=1.0,
            compensate_probabilities=True,
            scale_children_by_parent=True,
        ),
        orthogonalization=OrthogonalizationConfig(num_steps=steps, lr=3e-4) if steps else None,
        correlation=LowRankCorrelationConfig(rank=25, correlation_scale=0.1),
        mean_firing_magnitudes=synthetic.LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=synthetic.FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        bias=0.5,
        seed=42,
    )


def build_model(cfg):
    """SAELens's ``SyntheticModel`` for ``cfg`` on the CPU (its construction is seeded by
    ``cfg.seed`` under a forked RNG: torch's global state is left as it was)."""
    synthetic, _, _ = _import_synthetic()
    return synthetic.SyntheticModel(cfg, device="cpu")


def sample(model, n_samples, random_state):
    """``(data, activations)``: float32 samples and the CSR matrix of their true activations.

    SAELens samples from torch's global generator; it runs under a forked RNG seeded from
    ``random_state``, so the caller's torch state is untouched and the draw is reproducible.
    """
    seed = int(check_random_state(random_state).randint(2**31 - 1))
    data, activations = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, n_samples, _SAMPLE_CHUNK):
            hidden, features = model.sample_with_features(min(_SAMPLE_CHUNK, n_samples - start))
            data.append(hidden.to(torch.float32).numpy())
            activations.append(sp.csr_matrix(features.to(torch.float32).numpy()))
    return np.concatenate(data), sp.vstack(activations, format="csr")


def make(n_samples, config, n_true_features, n_features, orthogonalization_steps, random_state):
    cfg = synthsaebench_config(config, n_true_features, n_features, orthogonalization_steps)
    model = build_model(cfg)
    data, activations = sample(model, n_samples, random_state)
    feature_dict = model.feature_dict
    return Bunch(
        data=data,
        activations=activations,
        features=feature_dict.feature_vectors.detach().to(torch.float32).numpy().copy(),
        bias=feature_dict.bias.detach().to(torch.float32).numpy().copy(),
        firing_probabilities=model.activation_generator.firing_probabilities.detach()
        .to(torch.float64)
        .numpy()
        .copy(),
        config=cfg.to_dict(),
    )
