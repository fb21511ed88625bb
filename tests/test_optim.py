"""Adam with one second moment per atom: Adam's update with the row's mean square."""

import numpy as np
import pytest
import torch

from skmpsae._train.optim import _AtomAdam


def gradients(shape, n_steps, seed=0):
    rng = np.random.RandomState(seed)
    # Rows of very different scales, as atoms used often and rarely are.
    scales = np.exp(rng.uniform(-4, 2, size=(shape[0],) + (1,) * (len(shape) - 1)))
    return [torch.from_numpy(scales * rng.standard_normal(shape)) for _ in range(n_steps)]


def run(optimizer_class, start, grads, **kwargs):
    param = torch.nn.Parameter(start.clone())
    optimizer = optimizer_class([param], lr=1e-2, **kwargs)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
    return param.detach(), optimizer


def test_vectors_get_adams_update():
    start, grads = torch.zeros(7, dtype=torch.float64), gradients((7,), 5)
    ours, _ = run(_AtomAdam, start, grads)
    adam, _ = run(torch.optim.Adam, start, grads)
    torch.testing.assert_close(ours, adam, rtol=1e-12, atol=1e-15)


def test_matrix_rows_share_one_second_moment():
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, 1e-2
    start, grads = torch.zeros(4, 6, dtype=torch.float64), gradients((4, 6), 5, seed=1)
    ours, _ = run(_AtomAdam, start, grads)
    m, v, want = np.zeros((4, 6)), np.zeros((4, 1)), start.numpy().copy()
    for t, grad in enumerate(grads, start=1):
        g = grad.numpy()
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * (g * g).mean(axis=1, keepdims=True)
        want -= lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
    np.testing.assert_allclose(ours.numpy(), want, rtol=1e-12)
    # Each row moves along its momentum (here the first step: along its gradient), however
    # unevenly the gradient is spread over the row's entries, unlike Adam.
    first, _ = run(_AtomAdam, start, grads[:1])
    cosine = torch.nn.functional.cosine_similarity(first, -grads[0], dim=1)
    torch.testing.assert_close(cosine, torch.ones(4, dtype=torch.float64))
    adam, _ = run(torch.optim.Adam, start, grads[:1])
    assert torch.nn.functional.cosine_similarity(adam, -grads[0], dim=1).min() < 0.9


def test_state_dict_continues_exactly():
    start, grads = torch.randn(5, 3, dtype=torch.float64), gradients((5, 3), 6, seed=2)
    straight, _ = run(_AtomAdam, start, grads)
    half, optimizer = run(_AtomAdam, start, grads[:3])
    param = torch.nn.Parameter(half.clone())
    resumed = _AtomAdam([param], lr=1e-2)
    resumed.load_state_dict(optimizer.state_dict())
    for grad in grads[3:]:
        param.grad = grad.clone()
        resumed.step()
    assert torch.equal(param.detach(), straight)


def test_closure_is_refused():
    param = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="closure"):
        _AtomAdam([param], lr=1e-2).step(lambda: 0.0)


def test_state_dict_has_torch_optimizers_layout():
    # Checkpoints written while _AtomAdam derived from torch.optim.Optimizer must still load.
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    ours, adam = _AtomAdam(params, lr=1e-2), torch.optim.Adam(params, lr=1e-2)
    for p in params:
        p.grad = torch.ones_like(p)
    ours.step()
    adam.step()
    mine, theirs = ours.state_dict(), adam.state_dict()
    assert mine["param_groups"][0]["params"] == theirs["param_groups"][0]["params"] == [0, 1]
    assert mine["state"].keys() == theirs["state"].keys()
    assert mine["state"][1].keys() == theirs["state"][1].keys()
    with pytest.raises(ValueError, match="other parameters"):
        _AtomAdam(params[:1], lr=1e-2).load_state_dict(mine)


def test_a_fit_does_not_import_torch_dynamo():
    # torch.optim.Optimizer imports torch._dynamo on its first instance: more than a second
    # of a process's first MatchingPursuitSAE fit, which its optimiser no longer pays.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from skmpsae import MatchingPursuitSAE\n"
        "MatchingPursuitSAE(n_components=8, n_nonzero_coefs=2, max_iter=1).fit("
        "np.random.RandomState(0).randn(64, 5))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
