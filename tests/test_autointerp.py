import numpy as np
import pytest

from _helpers import RectifiedIdentity
from skmpsae import TopKSAE
from skmpsae.inspect import (
    baseline_explainer,
    baseline_scorer,
    explain,
    score_explanations,
)


@pytest.fixture
def corpus():
    rng = np.random.RandomState(0)
    vocab = np.array([" the", " cat", " sat", " on", " mat", " dog"])
    tokens = vocab[rng.randint(0, vocab.size, 3000)]
    texts = np.arange(3000) // 30
    X = np.zeros((3000, 3))
    X[:, 0] = np.where(tokens == " cat", 1 + rng.rand(3000), 0)  # a " cat" detector
    X[:, 1] = np.where(rng.rand(3000) < 0.2, 1 + rng.rand(3000), 0)  # fires at random
    X[:, 2] = np.where(tokens == " dog", 1 + rng.rand(3000), 0)
    return RectifiedIdentity().fit(X), X, tokens, texts


def test_baseline_scores_a_token_detector_perfectly(corpus):
    est, X, tokens, texts = corpus
    explanations = explain(est, X, tokens, texts, latents=[0, 1, 2], window=0)
    assert explanations[0] == "cat" and explanations[2] == "dog"
    result = score_explanations(est, X, tokens, texts, explanations, window=0, random_state=0)
    assert result.scores[0] == 1.0 and result.scores[2] == 1.0
    # The random latent's explanation names tokens that are as frequent off it as on it.
    assert result.scores[1] < 0.8
    assert result.latents.tolist() == [0, 1, 2] and result.n_contexts.tolist() == [20] * 3


def test_protocol_is_balanced_and_hides_the_activations(corpus):
    est, X, tokens, texts = corpus
    seen = {}

    def explainer(contexts):
        seen["explained"] = [c["activation"] for c in contexts]
        return "anything"

    def always_yes(explanation, contexts):
        seen["keys"] = {key for c in contexts for key in c}
        return [True] * len(contexts)

    explanations = explain(est, X, tokens, texts, latents=[0], n_examples=5, explainer=explainer)
    # The explainer sees the top 5 activations, largest first.
    assert seen["explained"] == sorted(X[:, 0], reverse=True)[:5]
    result = score_explanations(
        est, X, tokens, texts, explanations, n_examples=5, scorer=always_yes
    )
    # Balanced: "always yes" is right on exactly half the contexts.
    assert result.score == 0.5
    assert seen["keys"] == {"tokens", "centre"}


def test_contexts_stay_within_their_text(corpus):
    est, X, tokens, texts = corpus
    lengths = []

    def explainer(contexts):
        lengths.extend(len(c["tokens"]) for c in contexts)
        return baseline_explainer(contexts)

    explain(est, X, tokens, np.arange(3000), latents=[0], explainer=explainer)
    assert lengths == [1] * 10  # one-token texts: the window holds the token alone


def test_baselines_directly():
    contexts = [{"tokens": [" a", " Cat", " b"], "centre": 1, "activation": 1.0}] * 2
    contexts += [{"tokens": [" dog"], "centre": 0, "activation": 0.5}]
    assert baseline_explainer(contexts) == "cat dog"
    assert baseline_scorer("cat", [{"tokens": [" CAT"]}, {"tokens": [" category"]}]) == [
        True,
        False,
    ]


def test_explain_draws_alive_latents_and_errors(corpus):
    est, X, tokens, texts = corpus
    drawn = explain(est, X, tokens, texts, n_latents=2, random_state=0)
    assert len(drawn) == 2 and set(drawn) <= {0, 1, 2}
    with pytest.raises(ValueError, match="explanations is empty"):
        score_explanations(est, X, tokens, texts, {})
    with pytest.raises(ValueError, match="predictions for 20 contexts"):
        score_explanations(est, X, tokens, texts, {0: "cat"}, scorer=lambda e, c: [True])
    with pytest.raises(ValueError, match="one entry per row"):
        explain(est, X, tokens[:5], texts)


def test_runs_on_an_sae(corpus):
    _, X, tokens, texts = corpus
    sae = TopKSAE(6, n_nonzero_coefs=1, max_iter=3, random_state=0).fit(X)
    explanations = explain(sae, X, tokens, texts, n_latents=3, random_state=0)
    result = score_explanations(sae, X, tokens, texts, explanations, random_state=0)
    assert 0.0 <= result.score <= 1.0
