"""BatchTopK, Matryoshka and JumpReLU: their torch math against naive loops in float64, and
their behaviour on real digits."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from skmpsae import BatchTopKSAE, JumpReLUSAE, MatchingPursuitSAE, MatryoshkaSAE, TopKSAE
from skmpsae._models.batchtopk import _batch_topk_kept, _BatchTopKModule
from skmpsae._models.jumprelu import _JumpReLU, _JumpReLUModule, _Step
from skmpsae._models.matryoshka import _default_prefix_sizes, _MatryoshkaModule

F64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    return (load_digits().data / 16.0).astype(np.float32)


def _module(cls, *args, seed=0, n_components=12, n_features=5, **kw):
    module = cls(n_components, n_features, *args, fit_intercept=True, dtype=F64, device="cpu", **kw)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=F64))
        module.normalize()
    return module


# -- BatchTopK ------------------------------------------------------------------------------
def _naive_batch_topk_codes(module, x):
    """The batch-level TopK codes of ``x``, dense (n, K): the ReLU activations at the
    ``k * n`` largest entries over the whole batch (the ranking has no gradient)."""
    pre = (x - module.bias) @ module.encoder_weight.T + module.encoder_bias
    acts = torch.relu(pre)
    order = np.argsort(-acts.detach().numpy(), axis=None)[: module.k * x.shape[0]]
    keep = torch.zeros(acts.numel(), dtype=acts.dtype)
    keep[torch.as_tensor(order)] = 1.0
    return acts * keep.view_as(acts)


def test_batch_topk_kept_is_the_naive_global_ranking():
    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(7, 9, generator=gen, dtype=F64))
    k = 3
    kept = _batch_topk_kept(acts, k)
    assert (kept[1:] > kept[:-1]).all()  # in row order, as embedding_bag reads them
    mask = torch.zeros(acts.numel(), dtype=torch.bool)
    mask[kept] = True
    mask = mask.view_as(acts)
    flat = sorted(((float(v), i, j) for (i, j), v in np.ndenumerate(acts.numpy())), reverse=True)
    expected = np.zeros(acts.shape, dtype=bool)
    for value, i, j in flat[: k * acts.shape[0]]:
        expected[i, j] = value > 0
    np.testing.assert_array_equal(mask.numpy(), expected)
    # The budget is shared: rows keep different numbers of latents, k on average.
    per_row = expected.sum(axis=1)
    assert per_row.min() < per_row.max() and per_row.sum() == k * acts.shape[0]


def test_batch_topk_loss_and_gradients_match_a_naive_computation():
    module = _module(_BatchTopKModule, 2, seed=1, aux_coef=0.0)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    loss, fired = module.loss(x)
    loss.backward()
    got = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}

    params = {
        n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in module.named_parameters()
    }
    pre = (x - params["bias"]) @ params["encoder_weight"].T + params["encoder_bias"]
    acts = torch.relu(pre)
    order = np.argsort(-acts.detach().numpy(), axis=None)[: 2 * x.shape[0]]
    keep = torch.zeros(acts.numel(), dtype=F64)
    keep[torch.as_tensor(order)] = 1.0
    z = acts * keep.view_as(acts)
    expected = 0.0
    for i in range(x.shape[0]):
        x_hat = params["bias"] + sum(z[i, j] * params["dictionary"][j] for j in range(12))
        expected = expected + ((x[i] - x_hat) ** 2).sum()
    expected = expected / x.shape[0] / x.shape[1]
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    for name, grad in got.items():
        np.testing.assert_allclose(
            grad.numpy(), params[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name
        )
    np.testing.assert_array_equal(fired.numpy(), (z > 0).sum(dim=0).numpy())


def test_batch_topk_batch_without_a_positive_activation_reconstructs_the_bias():
    # No latent kept anywhere: every row's bag of the sparse decoding is empty.
    module = _module(_BatchTopKModule, 2, seed=7, aux_coef=0.0)
    with torch.no_grad():
        module.encoder_bias.fill_(-100.0)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(8), dtype=F64)
    loss, fired = module.loss(x)
    expected = ((x - module.bias.detach()) ** 2).sum(dim=1).mean() / x.shape[1]
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-12)
    assert int(fired.sum()) == 0 and float(module.threshold) == -1.0


def test_batch_topk_threshold_is_a_running_average_of_the_smallest_kept_activation():
    module = _module(_BatchTopKModule, 2, seed=3, aux_coef=0.0)
    gen = torch.Generator().manual_seed(4)
    expected = None
    for _ in range(5):
        x = torch.randn(8, 5, generator=gen, dtype=F64)
        with torch.no_grad():
            z = _naive_batch_topk_codes(module, x)
        smallest = float(z[z > 0].min())
        expected = smallest if expected is None else 0.98 * expected + 0.02 * smallest
        module.loss(x)
        assert float(module.threshold) == pytest.approx(expected, rel=1e-12)
    with torch.no_grad():  # the end-of-epoch re-measurement must not move it
        module.loss(torch.randn(8, 5, generator=gen, dtype=F64))
    assert float(module.threshold) == pytest.approx(expected, rel=1e-12)


def test_batch_topk_inference_keeps_about_k_latents_per_digit(digits):
    sae = BatchTopKSAE(
        64, n_nonzero_coefs=6, max_iter=15, batch_size=64, random_state=0, device="cpu"
    ).fit(digits)
    codes = sae.transform(digits)
    l0 = (codes != 0).sum(axis=1)
    assert 4.5 < l0.mean() < 8.0  # the threshold reproduces the training budget on average
    assert l0.min() < l0.max()  # and adapts per sample
    # Codes are the ReLU activations above the threshold: equal to a naive numpy encoder.
    pre = (digits - sae.intercept_) @ sae.encoder_weights_.T + sae.encoder_intercept_
    expected = np.where(pre > sae.threshold_, pre, 0.0)
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-5)
    topk = sae.set_params(transform_n_nonzero_coefs=6).transform(digits)
    assert ((topk != 0).sum(axis=1) <= 6).all()


def test_batch_topk_reconstructs_digits_better_than_topk(digits):
    # The published claim, at equal mean L0, on a held-out half.
    X_train, X_test = digits[::2], digits[1::2]
    kw = dict(
        n_components=64, n_nonzero_coefs=6, max_iter=20, batch_size=64, random_state=0, device="cpu"
    )
    batch = BatchTopKSAE(**kw).fit(X_train)
    topk = TopKSAE(**kw).fit(X_train)
    assert (batch.transform(X_test) != 0).sum(axis=1).mean() < 7.0
    assert batch.score(X_test) > topk.score(X_test)


# -- Matryoshka -----------------------------------------------------------------------------
def test_default_prefix_sizes():
    assert _default_prefix_sizes(256) == (16, 32, 64, 128, 256)
    assert _default_prefix_sizes(8) == (1, 2, 4, 8)
    assert _default_prefix_sizes(1) == (1,)


def test_matryoshka_loss_and_gradients_match_naive_prefix_reconstructions():
    sizes = (3, 7, 12)
    module = _module(_MatryoshkaModule, 2, sizes, seed=5, aux_coef=0.0)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(6), dtype=F64)
    loss, _ = module.loss(x)
    loss.backward()
    got = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}

    z = _naive_batch_topk_codes(module, x)  # the ranking has no gradient; the codes do
    module.zero_grad()
    expected = 0.0
    for m in sizes:
        x_hat = z[:, :m] @ module.dictionary[:m] + module.bias
        expected = expected + ((x - x_hat) ** 2).sum(dim=1).mean() / x.shape[1]
    expected = expected / len(sizes)
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    for name, p in module.named_parameters():
        if name in got:
            np.testing.assert_allclose(
                got[name].numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name
            )


def test_matryoshka_first_latents_alone_reconstruct(digits):
    # The point of the nested loss: the first 8 of 64 latents are a model of their own, far
    # better than the first 8 latents of a BatchTopK SAE, which are an arbitrary subset.
    kw = dict(
        n_components=64, n_nonzero_coefs=6, max_iter=15, batch_size=64, random_state=0, device="cpu"
    )
    nested = MatryoshkaSAE(prefix_sizes=[8, 32], **kw).fit(digits)
    flat = BatchTopKSAE(**kw).fit(digits)
    assert nested.prefix_sizes_ == (8, 32, 64)

    def prefix_r2(sae, m):
        codes = sae.transform(digits)[:, :m]
        residual = digits - codes @ sae.components_[:m] - sae.intercept_
        return 1 - (residual**2).sum() / ((digits - digits.mean(axis=0)) ** 2).sum()

    assert prefix_r2(nested, 8) > prefix_r2(flat, 8) + 0.1
    assert nested.score(digits) > 0.5


# -- JumpReLU -------------------------------------------------------------------------------
def _jump_inputs(seed=7):
    gen = torch.Generator().manual_seed(seed)
    pre = torch.randn(40, 6, generator=gen, dtype=F64)
    threshold = torch.rand(6, generator=gen, dtype=F64) * 0.5 + 0.2
    return pre, threshold


def test_jumprelu_forward_and_pre_activation_gradient_are_exact():
    pre, threshold = _jump_inputs()
    pre = pre[(pre - threshold).abs().min(dim=1).values > 1e-3]  # no sample on a jump
    pre.requires_grad_(True)
    out = _JumpReLU.apply(pre, threshold, 0.1)
    np.testing.assert_array_equal(
        out.detach().numpy(), np.where(pre.detach() > threshold, pre.detach(), 0.0)
    )
    # Away from the jumps the function is smooth in pre: finite differences agree.
    assert torch.autograd.gradcheck(
        lambda p: _JumpReLU.apply(p, threshold, 0.1), (pre,), eps=1e-6, atol=1e-8
    )
    # The step function's output carries no gradient to the pre-activations.
    (_Step.apply(pre, threshold, 0.1).sum()).backward()
    assert pre.grad is None or float(pre.grad.abs().max()) == 0.0


def test_jumprelu_threshold_gradient_is_the_papers_pseudo_derivative():
    pre, threshold = _jump_inputs()
    threshold.requires_grad_(True)
    weights = torch.randn(pre.shape, generator=torch.Generator().manual_seed(8), dtype=F64)
    bandwidth = 0.3
    (_JumpReLU.apply(pre, threshold, bandwidth) * weights).sum().backward()
    expected = np.zeros(6)
    p, t, w = pre.numpy(), threshold.detach().numpy(), weights.numpy()
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            if abs(p[i, j] - t[j]) < bandwidth / 2:  # rectangle kernel
                expected[j] += -(t[j] / bandwidth) * w[i, j]
    assert np.abs(expected).max() > 0  # some pre-activations fall in the windows
    np.testing.assert_allclose(threshold.grad.numpy(), expected, rtol=1e-12)


def test_step_threshold_gradient_is_the_derivative_of_the_smoothed_step():
    # The pseudo-derivative -K/bandwidth is exact for the step convolved with the rectangle
    # kernel: clip((pre - threshold) / bandwidth + 1/2, 0, 1). Check it by finite differences.
    pre, threshold = _jump_inputs(9)
    bandwidth, eps = 0.4, 1e-6
    threshold.requires_grad_(True)
    _Step.apply(pre, threshold, bandwidth).sum().backward()

    def smoothed_count(t):
        return np.clip((pre.numpy() - t) / bandwidth + 0.5, 0, 1).sum(axis=0)

    t = threshold.detach().numpy()
    numeric = (smoothed_count(t + eps) - smoothed_count(t - eps)) / (2 * eps)
    np.testing.assert_allclose(threshold.grad.numpy(), numeric, rtol=1e-6, atol=1e-6)


def test_jumprelu_loss_is_error_plus_alpha_times_l0():
    module = _module(_JumpReLUModule, 0.01, 0.2, seed=10)
    with torch.no_grad():
        module.threshold.copy_(torch.full((12,), 0.3, dtype=F64))
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(11), dtype=F64)
    loss, fired = module.loss(x, sparsity_scale=0.5)  # half-way through the warm-up
    pre = (x - module.bias) @ module.encoder_weight.T + module.encoder_bias
    z = torch.where(pre > 0.3, pre, 0.0)
    error = ((x - z @ module.dictionary - module.bias) ** 2).sum(dim=1).mean() / 5
    expected = error + 0.5 * 0.01 * (pre > 0.3).sum(dim=1).double().mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    np.testing.assert_array_equal(fired.numpy(), (z > 0).sum(dim=0).numpy())


def test_jumprelu_alpha_controls_sparsity_and_thresholds(digits):
    kw = dict(n_components=64, max_iter=15, batch_size=64, random_state=0, device="cpu")
    dense = JumpReLUSAE(alpha=1e-4, **kw).fit(digits)
    sparse_ = JumpReLUSAE(alpha=3e-2, **kw).fit(digits)
    l0 = lambda est: (est.transform(digits) != 0).sum(axis=1).mean()  # noqa: E731
    assert l0(sparse_) < 0.7 * l0(dense)
    assert (sparse_.threshold_ >= 0).all()
    assert np.median(sparse_.threshold_) > np.median(dense.threshold_)
    # Codes are pre-activations above each latent's threshold, unshrunk.
    pre = (digits - sparse_.intercept_) @ sparse_.encoder_weights_.T + sparse_.encoder_intercept_
    np.testing.assert_allclose(
        sparse_.transform(digits),
        np.where(pre > sparse_.threshold_, pre, 0.0),
        rtol=1e-5,
        atol=1e-5,
    )


# -- MP-SAE dead-atom revival ---------------------------------------------------------------
def test_revival_term_is_minus_the_mean_best_cosine_of_dead_atoms():
    from skmpsae._models.matching_pursuit_module import _revival_term

    gen = torch.Generator().manual_seed(12)
    residual = torch.randn(7, 5, generator=gen, dtype=F64)
    dictionary = torch.randn(6, 5, generator=gen, dtype=F64)
    dictionary = (dictionary / dictionary.norm(dim=1, keepdim=True)).requires_grad_(True)
    dead = torch.tensor([True, False, True, False, False, True])
    term = _revival_term(residual, dictionary, dead)
    term.backward()
    r, d = residual.numpy(), dictionary.detach().numpy()
    unit = r / np.linalg.norm(r, axis=1, keepdims=True)
    expected, grad = 0.0, np.zeros_like(d)
    for j in np.flatnonzero(dead.numpy()):
        best = int(np.argmax(unit @ d[j]))
        expected -= unit[best] @ d[j] / 3
        grad[j] = -unit[best] / 3
    assert float(term.detach()) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(dictionary.grad.numpy(), grad, rtol=1e-12, atol=1e-15)


def test_revival_brings_dead_atoms_back(digits):
    # Without an intercept, 16 atoms live on the pixels that are blank in every digit and the
    # other 16 off them: the first correlate with no residual, so the pursuit never picks them
    # (and their gradient is zero).
    blank = digits.max(axis=0) == 0
    assert blank.sum() >= 3
    rng = np.random.RandomState(0)
    init = np.abs(rng.randn(32, digits.shape[1]))
    init[:16, blank] = 0
    init[16:, ~blank] = 0
    kw = dict(
        n_components=32,
        n_nonzero_coefs=4,
        max_iter=12,
        batch_size=64,
        fit_intercept=False,
        dict_init=init,
        random_state=0,
        device="cpu",
    )
    without = MatchingPursuitSAE(revival_coef=0.0, **kw).fit(digits)
    revived = MatchingPursuitSAE(**kw).fit(digits)
    assert without.n_dead_components_ >= 16
    assert revived.n_dead_components_ <= 4
    assert revived.score(digits) > without.score(digits)
