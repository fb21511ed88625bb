import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import BaseEstimator

from skmpsae import MatchingPursuitSAE
from skmpsae._metrics.absorption import absorption_scores
from skmpsae.metrics import absorption

# --- A transcription of SAEBench's code, the reference of absorption_scores -----------------
# From adamkarvonen/SAEBench, sae_bench/evals/absorption/feature_absorption_calculator.py:
# the body of FeatureAbsorptionCalculator.calculate_absorption's loop over prompts and
# FeatureAbsorptionCalculator._is_full_absorption, with their default thresholds, transcribed
# line for line (the model and SAE calls replaced by their outputs: sae_acts, cos_sims and
# act_probe_proj).
EPS = 1e-8
full_absorption_probe_cos_sim_threshold = 0.025
absorption_fraction_probe_cos_sim_threshold = 0.1
probe_projection_proportion_threshold = 0.4
absorption_fraction_max_absorbing_latents = 3
topk_feats = 10


def _saebench_is_full_absorption(probe_projection, main_feature_scores, top_scores):
    if not all(abs(activation) < EPS for activation, _ in main_feature_scores):
        return False
    if top_scores[0][1] < full_absorption_probe_cos_sim_threshold:
        return False
    if probe_projection < 0:
        return False
    proj_proportion = (top_scores[0][0] * top_scores[0][1]) / probe_projection
    if proj_proportion < probe_projection_proportion_threshold:
        return False
    return True


def _saebench_word(sae_acts, cos_sims, act_probe_proj, main_feature_ids):
    sae_act_probe_proj = sae_acts * cos_sims
    main_feats_probe_proj = torch.sum(sae_act_probe_proj[main_feature_ids]).item()
    potential_absorbers_mask = torch.ones(sae_act_probe_proj.size(0), dtype=torch.bool)
    potential_absorbers_mask[main_feature_ids] = False
    potential_absorbers_mask &= cos_sims >= absorption_fraction_probe_cos_sim_threshold
    potential_absorbers_mask &= sae_act_probe_proj > 0
    potential_absorbers_probe_proj = sae_act_probe_proj[potential_absorbers_mask]
    top_potential_absorbers_probe_proj = potential_absorbers_probe_proj.topk(
        k=min(absorption_fraction_max_absorbing_latents, potential_absorbers_probe_proj.numel())
    ).values
    top_potential_absorbers_total_probe_proj = torch.sum(top_potential_absorbers_probe_proj).item()
    top_potential_absorbers_probe_proj_proportion = (
        top_potential_absorbers_total_probe_proj / act_probe_proj
    )
    if (
        main_feats_probe_proj >= act_probe_proj
        or top_potential_absorbers_probe_proj_proportion < probe_projection_proportion_threshold
    ):
        absorption_fraction = 0.0
    elif main_feats_probe_proj <= 0.0:
        absorption_fraction = 1.0
    else:
        unaccounted_probe_proj = act_probe_proj - main_feats_probe_proj
        absorption_probe_proj = min(
            top_potential_absorbers_total_probe_proj, unaccounted_probe_proj
        )
        absorption_fraction = absorption_probe_proj / (
            absorption_probe_proj + main_feats_probe_proj
        )
        absorption_fraction = np.clip(absorption_fraction, 0.0, 1.0)
    top_proj_feats = sae_act_probe_proj.topk(topk_feats).indices.tolist()
    main_scores = [(sae_acts[i].item(), cos_sims[i].item()) for i in main_feature_ids]
    top_scores = [(sae_acts[i].item(), cos_sims[i].item()) for i in top_proj_feats]
    is_full = _saebench_is_full_absorption(act_probe_proj, main_scores, top_scores)
    return absorption_fraction, is_full


# --- end of the transcription ---------------------------------------------------------------


def _fixed_inputs(seed):
    """Sparse codes and cosines that reach every branch: main latents firing or silent,
    absorbers above and below the thresholds, positive and negative probe projections."""
    rng = np.random.RandomState(seed)
    n_tokens, n_latents = 200, 40
    codes = np.where(rng.rand(n_tokens, n_latents) < 0.15, rng.exponential(size=(200, 40)), 0)
    codes[rng.rand(n_tokens) < 0.4, :2] = 0.0  # main latents 0 and 1 silent
    cos = rng.uniform(-0.3, 0.6, n_latents)
    cos[:2] = [0.7, 0.5]
    act = (codes * cos).sum(axis=1) + rng.normal(0, 0.5, n_tokens)
    return codes, cos, act, [0, 1]


@pytest.mark.parametrize("seed", range(4))
def test_absorption_scores_match_saebench_transcription(seed):
    codes, cos, act, main = _fixed_inputs(seed)
    fraction, full = absorption_scores(codes, cos, act, main)
    expected = [
        _saebench_word(torch.tensor(c), torch.tensor(cos), float(a), main)
        for c, a in zip(codes, act, strict=True)
    ]
    assert_allclose(fraction, [e[0] for e in expected], atol=1e-6)
    assert_array_equal(full, [e[1] for e in expected])
    # The inputs reach each branch, so the comparison is not vacuous.
    assert 0 < np.count_nonzero(fraction == 0) < fraction.size
    assert np.any(fraction == 1.0) and np.any((fraction > 0) & (fraction < 1))
    assert 0 < full.sum() < full.size


def test_absorption_scores_single_main_latent_full_absorption():
    # Main latent silent, latent 2 aligned (cos 0.9) carries the whole projection.
    codes = np.array([[0.0, 0.0, 2.0]])
    fraction, full = absorption_scores(codes, [1.0, 0.0, 0.9], [1.8], [0])
    assert fraction.tolist() == [1.0] and full.tolist() == [True]
    # The main latent fires: no absorption at all.
    fraction, full = absorption_scores([[2.0, 0.0, 0.0]], [1.0, 0.0, 0.9], [2.0], [0])
    assert fraction.tolist() == [0.0] and full.tolist() == [False]


class _FixedDictionary(BaseEstimator):
    """Codes by thresholded projection on fixed encoder rows, fixed decoder atoms: an SAE
    whose absorption is known."""

    def __init__(self, atoms=None, encoder=None):
        self.atoms, self.encoder = atoms, encoder

    def fit(self, X=None):
        self.components_ = np.asarray(self.atoms, dtype=np.float64)
        return self

    def transform(self, X):
        return np.maximum(np.asarray(X) @ np.asarray(self.encoder).T - 0.5, 0.0)


def test_absorption_finds_an_absorbed_parent():
    """Letter 'a' lives on e0. Words " ax.." fire the parent atom e0; words " ay.." add e3,
    where the parent's encoder is silenced, so their letter is carried by the child atom
    (e0 + e3)/sqrt(2) alone: fully absorbed, half of the 'a' tokens."""
    rng = np.random.RandomState(0)
    vocab = [f" a{c}{d}" for c in "xy" for d in "pqrstuvw"]
    vocab += [f" {b}{c}{d}" for b in "bc" for c in "xy" for d in "pqrstuvw"]
    tokens = np.array(vocab * 20)
    n = tokens.size
    X = 0.05 * rng.randn(n, 6)
    first = np.array([t[1] for t in tokens])
    child = np.array([t[1] == "a" and t[2] == "y" for t in tokens])
    X[first == "a", 0] += 2.0
    X[first == "b", 1] += 2.0
    X[first == "c", 2] += 2.0
    X[child, 3] += 2.0
    inv = 1 / np.sqrt(2)
    atoms = np.array(
        [
            [1, 0, 0, 0, 0, 0],  # parent 'a'
            [0, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [inv, 0, 0, inv, 0, 0],  # child: 'a' words ending in y
        ]
    )
    encoder = atoms.copy()
    encoder[0, 3] = -4.0  # the parent is silenced where the child fires
    sae = _FixedDictionary(atoms, encoder).fit()
    # A child that covers half the letter raises the k-sparse F1 by far more than 0.03:
    # SAEBench's rule counts it as a split of the letter feature, a main latent, not absorption.
    split = absorption(sae, X, tokens, random_state=0, min_tokens=5)
    a = list(split.letters).index("a")
    assert split.main_latents[a].tolist() == [0, 3]
    assert split.full_absorption_rate_per_letter[a] == 0.0
    result = absorption(sae, X, tokens, random_state=0, min_tokens=5, max_k=1, test_size=0.5)
    assert result.main_latents[a].tolist() == [0]
    # Every " ay.." token is fully absorbed, no " ax.." token (the parent fires there): the
    # rate is the share of " ay.." words among the held-out 'a' words, a multiple of
    # 1/n_words; the fraction adds the child's partial share on " ax.." tokens.
    rate = result.full_absorption_rate_per_letter[a]
    assert 0.0 < rate < 1.0
    assert rate <= result.absorption_fraction_per_letter[a] < 1.0
    n_words = result.n_true_positives[a] / 20
    assert (rate * n_words) == pytest.approx(round(rate * n_words))
    assert result.absorption_fraction_per_letter[list(result.letters).index("b")] == 0.0


def test_absorption_on_an_sae_is_a_rate():
    rng = np.random.RandomState(0)
    tokens = np.array([f" {a}{b}" for a in "abcd" for b in "mnopqrst"] * 15)
    X = rng.randn(tokens.size, 8).astype(np.float32)
    for i, letter in enumerate("abcd"):
        X[np.char.startswith(tokens.astype(str), " " + letter), i] += 3.0
    sae = MatchingPursuitSAE(16, n_nonzero_coefs=3, max_iter=3, random_state=0).fit(X)
    result = absorption(sae, X, tokens, random_state=0)
    assert 0.0 <= result.mean_absorption_fraction <= 1.0
    assert 0.0 <= result.full_absorption_rate <= 1.0
    assert result.probe_accuracy > 0.9
    assert set(result.letters) <= set("abcd")


def test_absorption_rejects_tokens_without_words():
    sae = MatchingPursuitSAE(4, n_nonzero_coefs=1, max_iter=1, random_state=0)
    X = np.random.RandomState(0).randn(20, 3)
    sae.fit(X)
    with pytest.raises(ValueError, match="first-letter"):
        absorption(sae, X, np.array(["##x"] * 20))
    with pytest.raises(ValueError, match="one entry per row"):
        absorption(sae, X, np.array([" ab"] * 3))
