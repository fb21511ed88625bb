"""Pursuit kernels against their references, on real MNIST digits.

The references are the MP-SAE papers' unrolled loop (``_naive_matching_pursuit``, which also
gives the reference gradients under autograd) and scikit-learn's ``orthogonal_mp_gram``. Every
matching-pursuit selection path is checked: the whole Gram matrix ("gram"), Gram rows computed
for the atoms selected ("rows", also with a cache too small for them, so that rows are
recomputed), and one correlation GEMM per step ("gemm").
"""

import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp_gram

from skmpsae import MatchingPursuitSAE, matching_pursuit, orthogonal_matching_pursuit
from skmpsae._models.matching_pursuit_module import _MatchingPursuitModule, _revival_term
from skmpsae._pursuit import grad as grad_module
from skmpsae._pursuit.encode import _decode_selected, _scatter_codes
from skmpsae._pursuit.grad import _mp_coefficients, _mp_squared_error, _SelfProducts
from skmpsae._pursuit.reference import _naive_matching_pursuit
from skmpsae._pursuit.selection import _plan_mp, _select_mp

# (method, max_bytes): the three paths, and the rows path with room for a few cached rows only.
PATHS = {
    "gram": ("gram", 1 << 31),
    "rows": ("rows", 1 << 31),
    "rows-small-cache": ("rows", None),
    "gemm": ("gemm", 1 << 31),
}


def select(X, D, k, path, **kwargs):
    """``_select_mp`` on one path; checks that the path ran as asked."""
    method, max_bytes = PATHS[path]
    row_bytes = D.shape[0] * D.element_size()
    if max_bytes is None:  # room for 19 rows: chunks of 4 rows, and 7 rows of cache
        max_bytes = 19 * row_bytes
    out = _select_mp(X, D, k, method=method, max_bytes=max_bytes, **kwargs)
    assert out.plan.method == method
    if path == "rows-small-cache":
        assert out.plan.capacity <= 8
        assert out.rows_computed > 2 * out.plan.capacity
    return out.indices, out.values


def centred_problem(mnist, n_components, n_rows, dtype=np.float64):
    """Rows to encode and a dictionary of other centred, normalised digits."""
    X = mnist - mnist.mean(axis=0)
    atoms = X[:n_components] / np.linalg.norm(X[:n_components], axis=1, keepdims=True)
    return X[-n_rows:].astype(dtype), atoms.astype(dtype)


def stopping_problem(mnist, n_components, n_rows):
    """Non-negative atoms and rows ``a - 1.5 b``: positive MP stops many rows after a few steps
    (once no atom correlates positively with the residual); a third of the rows are plain
    digits, which never stop."""
    atoms = mnist[:n_components] / np.linalg.norm(mnist[:n_components], axis=1, keepdims=True)
    a, b = mnist[-2 * n_rows : -n_rows], mnist[-n_rows:]
    X = a - 1.5 * b
    X[: n_rows // 3] = a[: n_rows // 3]
    return X, atoms


def reference_residuals(X, D, k, positive):
    """Squared residual norms after each of the naive loop's steps, shape (n, k + 1)."""
    residual, out = X.copy(), [np.sum(X * X, axis=1)]
    for _ in range(k):
        corr = residual @ D.T
        j = corr.argmax(axis=1) if positive else np.abs(corr).argmax(axis=1)
        value = corr[np.arange(len(X)), j]
        if positive:
            value = np.maximum(value, 0)
        residual = residual - value[:, None] * D[j]
        out.append(np.sum(residual * residual, axis=1))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("positive", [True, False])
# 100 atoms: one Tensor.max; 600: the two-level argmax, with a tail block (600 = 9 * 64 + 24).
@pytest.mark.parametrize("n_components", [100, 600])
def test_selection_paths_equal_naive_loop(mnist, dtype, positive, n_components, path):
    X, D = centred_problem(mnist, n_components, 200, dtype)
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    indices, values = select(Xt, Dt, 20, path, positive=positive)
    ours = _scatter_codes(indices, values, n_components).numpy()
    naive = _naive_matching_pursuit(Xt, Dt, 20, positive=positive).numpy()
    same_atoms = np.all((ours != 0) == (naive != 0), axis=1)
    if dtype == np.float64:
        assert same_atoms.all()
        np.testing.assert_allclose(ours, naive, rtol=1e-9, atol=1e-9)
    else:
        # float32 rounding may swap two near-tied atoms in a rare row; all others agree.
        assert same_atoms.mean() >= 0.98
        np.testing.assert_allclose(ours[same_atoms], naive[same_atoms], rtol=1e-3, atol=2e-4)
    if positive:
        assert (ours >= 0).all()
    else:
        assert (ours < 0).any()


@pytest.mark.parametrize("path", list(PATHS))
def test_positive_stop_matches_naive_loop(mnist, path):
    X, D = stopping_problem(mnist, 64, 90)
    indices, values = select(torch.from_numpy(X), torch.from_numpy(D), 24, path)
    stopped = (values == 0).numpy()
    assert 20 < stopped.any(axis=1).sum() < 90
    # Steps not taken form a suffix.
    assert np.all(np.diff(stopped.astype(int), axis=1) >= 0)
    ours = _scatter_codes(indices, values, 64).numpy()
    naive = _naive_matching_pursuit(torch.from_numpy(X), torch.from_numpy(D), 24).numpy()
    np.testing.assert_allclose(ours, naive, rtol=1e-9, atol=1e-9)


def prefix_codes(X, D, steps, positive, path="gram"):
    """Codes after the first ``steps[i]`` steps of an untruncated 64-step run, row by row."""
    indices, values = select(torch.from_numpy(X), torch.from_numpy(D), 64, path, positive=positive)
    values = values * (torch.arange(64)[None, :] < torch.as_tensor(steps)[:, None])
    return _scatter_codes(indices, values, D.shape[0]).numpy()


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("positive", [True, False])
def test_tol_stops_each_sample_at_its_own_step(mnist, positive, path):
    X, D = centred_problem(mnist, 200, 150)
    resid = reference_residuals(X, D, 64, positive)
    tol = np.median(resid[:, 10])
    indices, values = select(
        torch.from_numpy(X), torch.from_numpy(D), 64, path, positive=positive, tol=tol
    )
    codes = _scatter_codes(indices, values, 200).numpy()
    public = matching_pursuit(X, D, n_nonzero_coefs=64, tol=tol, positive=positive)
    np.testing.assert_allclose(codes, public, rtol=1e-9, atol=1e-12)
    # Sample i stops after the first step whose residual is <= tol (or after 64 steps).
    below = resid[:, 1:] <= tol
    expected_steps = np.where(below.any(axis=1), below.argmax(axis=1) + 1, 64)
    assert len(np.unique(expected_steps)) >= 5
    np.testing.assert_allclose(
        codes, prefix_codes(X, D, expected_steps, positive, path), rtol=1e-9, atol=1e-12
    )
    final = np.sum((X - codes @ D) ** 2, axis=1)
    assert np.all(final[expected_steps < 64] <= tol * (1 + 1e-9))


@pytest.mark.parametrize("positive", [True, False])
def test_reconstruction_error_never_rises_with_k(mnist, positive):
    X, D = centred_problem(mnist, 256, 200, np.float32)
    errors = []
    for k in range(65):
        codes = prefix_codes(X, D, np.full(len(X), k), positive)
        errors.append(np.sum((X - codes @ D) ** 2, axis=1))
        if k in (1, 5, 16, 64):
            # Encoding at k gives exactly the first k steps of a longer encoding.
            short = matching_pursuit(X, D, n_nonzero_coefs=k, positive=positive)
            np.testing.assert_allclose(short, codes, rtol=1e-4, atol=1e-5)
    errors = np.array(errors)
    # Float32 rounding of the reconstruction, relative to the digit's energy.
    slack = 1e-5 * errors[0]
    assert np.all(np.diff(errors, axis=0) <= slack)
    assert np.all(errors[-1] < 0.5 * errors[0])


def loss_and_grads(X, D, b, k, positive, form, path="gram"):
    D = torch.tensor(D, requires_grad=True)
    b = torch.tensor(b, requires_grad=True)
    Xc = torch.from_numpy(X) - b
    if form == "naive":
        x_hat = _naive_matching_pursuit(Xc, D, k, positive=positive) @ D + b
    else:
        indices, values = select(Xc.detach(), D.detach(), k, path, positive=positive)
        active = (values != 0).to(Xc.dtype)
        gram = D @ D.T if form == "gemm" else None
        coefs = _mp_coefficients(Xc, D, indices, active, gram=gram)
        x_hat = _decode_selected(indices, coefs, D) + b
    loss = ((torch.from_numpy(X) - x_hat) ** 2).sum(dim=1).mean()
    loss.backward()
    return loss.item(), D.grad.numpy(), b.grad.numpy()


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("form", ["gathered", "gemm"])
@pytest.mark.parametrize("positive", [True, False])
def test_gradients_equal_naive_unrolled_loop(mnist, form, positive, path):
    if positive:
        X, D = stopping_problem(mnist, 64, 60)  # rows that stop early, and rows that do not
    else:
        X, D = centred_problem(mnist, 64, 60)
    b = 0.05 * np.random.RandomState(1).standard_normal(X.shape[1])
    ref = loss_and_grads(X, D, b, 16, positive, "naive")
    ours = loss_and_grads(X, D, b, 16, positive, form, path)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-12)
    for got, want in zip(ours[1:], ref[1:], strict=False):
        assert np.abs(want).max() > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def along_sphere(grad, D):
    """Each atom's gradient without its radial part (what training steps along)."""
    return grad - (grad * D).sum(axis=1, keepdims=True) * D


@pytest.mark.parametrize("pairs_from", ["gram", "atoms", "selection"])
@pytest.mark.parametrize("positive", [True, False])
def test_closed_form_error_equals_naive_loop_along_the_sphere(
    mnist, positive, pairs_from, monkeypatch
):
    # Training's error ||x - b||^2 - sum_t c_t^2 (no reconstruction): the unrolled loop's
    # value and bias gradient, and its dictionary gradient along each atom's sphere, with the
    # atoms' products read off a differentiable Gram matrix, the gathered atoms (gathered
    # here 5 rows at a time, so that the chunks' seams are crossed), or the selection's Gram
    # matrix and step values.
    monkeypatch.setattr(grad_module, "_ATOM_CHUNK_BYTES", 5 * 16 * mnist.shape[1] * 8)
    if positive:
        X, D = stopping_problem(mnist, 64, 60)
    else:
        X, D = centred_problem(mnist, 64, 60)
    b = 0.05 * np.random.RandomState(1).standard_normal(X.shape[1])
    ref_loss, ref_dict_grad, ref_bias_grad = loss_and_grads(X, D, b, 16, positive, "naive")
    Dt, bt = torch.tensor(D, requires_grad=True), torch.tensor(b, requires_grad=True)
    with torch.no_grad():
        centred = torch.from_numpy(X) - bt
        correlations = centred @ Dt.T
    gram = _SelfProducts.apply(Dt)
    indices, values = select(
        centred,
        Dt.detach(),
        16,
        "gram",
        positive=positive,
        gram=gram.detach(),
        correlations=correlations.clone(),
    )
    active = (values != 0).to(centred.dtype)
    if pairs_from == "gram":
        error, coefs = _mp_squared_error(centred, bt, Dt, indices, active, gram, correlations)
    elif pairs_from == "atoms":
        error, coefs = _mp_squared_error(centred, bt, Dt, indices, active)
    else:
        error, coefs = _mp_squared_error(
            centred, bt, Dt, indices, active, selection_gram=gram.detach(), values=values
        )
    (error / X.shape[0]).backward()
    np.testing.assert_allclose(error.item() / X.shape[0], ref_loss, rtol=1e-10)
    np.testing.assert_allclose(coefs.detach().numpy(), values.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        bt.grad.numpy(), ref_bias_grad, rtol=1e-9, atol=1e-12 * np.abs(ref_bias_grad).max()
    )
    ours, want = along_sphere(Dt.grad.numpy(), D), along_sphere(ref_dict_grad, D)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(ours, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("n_components", [32, 4096])  # closed form, and decoded (gathered)
def test_module_loss_is_the_decoded_reconstruction_error(mnist, n_components):
    X = torch.from_numpy(mnist[:256])
    module = _MatchingPursuitModule(
        n_components, X.shape[1], 8, True, True, torch.float64, "cpu", revival_coef=0.5
    )
    atoms = torch.from_numpy(mnist[-n_components:] - mnist.mean(axis=0))
    module.initialize(X.mean(dim=0) + 0.01, atoms / atoms.norm(dim=1, keepdim=True))
    dead = torch.zeros(n_components, dtype=torch.bool)
    dead[:3] = True
    for dead_mask in (None, dead):
        x_hat, indices, active = module(X)
        expected = ((X - x_hat) ** 2).sum() / X.numel()
        if dead_mask is not None:
            expected = expected + 0.5 * _revival_term(X - x_hat, module.dictionary, dead_mask)
        want = torch.autograd.grad(expected, list(module.parameters()))
        out = module.loss(X, dead_mask)
        got = torch.autograd.grad(out.loss, list(module.parameters()))
        torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=0)
        D = module.dictionary.detach().numpy()
        np.testing.assert_allclose(
            along_sphere(got[0].numpy(), D), along_sphere(want[0].numpy(), D), rtol=1e-8, atol=1e-14
        )
        np.testing.assert_allclose(got[1].numpy(), want[1].numpy(), rtol=1e-8, atol=1e-14)
        fired = torch.zeros(n_components, dtype=torch.long).index_add_(
            0, indices.flatten(), active.flatten().long()
        )
        assert torch.equal(out.fired, fired)


@pytest.mark.parametrize("use_tol", [False, True])
def test_omp_equals_sklearn_orthogonal_mp_gram(mnist, use_tol):
    X, D = centred_problem(mnist, 256, 200)
    gram, Xy = D @ D.T, D @ X.T
    norms_sq = np.sum(X * X, axis=1)
    if use_tol:
        tol = float(np.median(norms_sq) * 0.2)
        want = orthogonal_mp_gram(gram, Xy, tol=tol, norms_squared=norms_sq).T
        got = orthogonal_matching_pursuit(X, D, tol=tol, n_nonzero_coefs=256)
        residual = np.sum((X - got @ D) ** 2, axis=1)
        assert np.all(residual <= tol * (1 + 1e-9))
        assert np.ptp((got != 0).sum(axis=1)) > 5  # each sample got the atoms it needed
    else:
        want = orthogonal_mp_gram(gram, Xy, n_nonzero_coefs=20).T
        got = orthogonal_matching_pursuit(X, D, n_nonzero_coefs=20)
        assert np.all((got != 0).sum(axis=1) == 20)
    np.testing.assert_array_equal(got != 0, want != 0)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_public_functions_handle_scaled_and_zero_atoms(mnist):
    X, D = centred_problem(mnist, 120, 80)
    scales = np.random.RandomState(2).uniform(0.1, 10, size=120)
    scales[[5, 77]] = 0  # zero atoms can never help and must never be used
    scaled = D * scales[:, None]
    unit_codes = matching_pursuit(X, D[scales > 0], n_nonzero_coefs=12)
    for positive in (True, False):
        codes = matching_pursuit(X, scaled, n_nonzero_coefs=12, positive=positive)
        assert np.all(codes[:, [5, 77]] == 0)
        if positive:
            # Choosing by cosine: the same atoms as on the unit-norm dictionary, rescaled.
            np.testing.assert_allclose(
                codes[:, scales > 0] * scales[scales > 0], unit_codes, rtol=1e-9, atol=1e-12
            )
        omp = orthogonal_matching_pursuit(X, scaled, n_nonzero_coefs=12, positive=positive)
        assert np.all(omp[:, [5, 77]] == 0)
        residual = X - omp @ scaled
        # OMP's residual is orthogonal to every atom it selected.
        np.testing.assert_allclose(np.where(omp != 0, residual @ scaled.T, 0), 0, atol=1e-9)
    kept = D[scales > 0]
    want = orthogonal_mp_gram(kept @ kept.T, kept @ X.T, n_nonzero_coefs=12).T
    unit_omp = orthogonal_matching_pursuit(X, scaled, n_nonzero_coefs=12)[:, scales > 0]
    np.testing.assert_allclose(unit_omp * scales[scales > 0], want, rtol=1e-7, atol=1e-9)


def test_estimator_omp_transform(mnist):
    X = mnist[:600].astype(np.float32)
    sae = MatchingPursuitSAE(n_components=48, n_nonzero_coefs=8, max_iter=2, random_state=0)
    sae.fit(X)
    mp_codes = sae.transform(X)
    sae.set_params(transform_algorithm="omp")
    omp_codes = sae.transform(X)
    assert omp_codes.shape == (600, 48) and omp_codes.dtype == np.float32
    assert (omp_codes != 0).sum(axis=1).max() <= 8
    want = orthogonal_matching_pursuit(
        X - sae.intercept_, sae.components_, n_nonzero_coefs=8, positive=True
    )
    np.testing.assert_allclose(omp_codes, want, rtol=1e-4, atol=1e-5)
    # Least squares on the chosen atoms: the OMP residual is orthogonal to them.
    residual = X - sae.inverse_transform(omp_codes)
    overlap = np.where(omp_codes != 0, residual @ sae.components_.T, 0)
    assert np.abs(overlap).max() < 1e-3 * np.abs(residual).max() * np.sqrt(X.shape[1])
    assert sae.score(X) > 0.3
    assert not np.array_equal(mp_codes, omp_codes)


@pytest.mark.parametrize(
    ("n", "n_components", "max_bytes"),
    [
        (1000, 256, 2048 << 20),
        (1000, 3000, 2048 << 20),
        (1024, 16384, 2048 << 20),
        (900, 600, 1 << 20),
    ],
)
def test_the_first_correlations_cover_whole_chunks(n, n_components, max_bytes):
    """The first GEMM covers a block of whole chunks (the steps then run chunk by chunk) on
    every path the plan prices, and the chunk's codes are the naive loop's."""
    for gram_given in (False, True):
        plan = _plan_mp(n, n_components, 64, 8, 4, torch.device("cpu"), max_bytes, gram_given)
        assert plan.chunk <= plan.block and plan.block % plan.chunk == 0
        assert plan.block <= max(plan.chunk, n)
    g = torch.Generator().manual_seed(0)
    D = torch.randn(n_components, 16, generator=g, dtype=torch.float64)
    D /= D.norm(dim=1, keepdim=True)
    X = torch.randn(n, 16, generator=g, dtype=torch.float64)
    indices, values, plan, _ = _select_mp(X, D, 6, max_bytes=max_bytes)
    naive = _naive_matching_pursuit(X, D, 6)
    torch.testing.assert_close(_scatter_codes(indices, values, n_components), naive)


def test_a_workspace_reuses_its_buffers_and_is_never_pickled():
    import pickle

    from skmpsae._pursuit.gram import _Workspace

    workspace = _Workspace()
    first = workspace.get("gram", (4, 4), torch.float32, "cpu")
    assert workspace.get("gram", (4, 4), torch.float32, "cpu") is first
    assert workspace.get("gram", (5, 5), torch.float32, "cpu").shape == (5, 5)
    assert workspace.get("gram", (5, 5), torch.float64, "cpu").dtype == torch.float64
    assert pickle.loads(pickle.dumps(workspace))._buffers == {}
    workspace.clear()
    assert workspace._buffers == {}


@pytest.mark.parametrize("method", ["gram", "rows"])
def test_selections_in_a_workspace_equal_fresh_ones(mnist, method):
    # A training loop's batches reuse one workspace, whose buffers keep the last batch's
    # numbers: every selection must overwrite what it reads.
    from skmpsae._pursuit.gram import _Workspace

    X, D = centred_problem(mnist, 64, 200)
    X, D = torch.from_numpy(X), torch.from_numpy(D)
    workspace = _Workspace()
    for rows in (X[:40], X[40:], X[:40]):
        want = _select_mp(rows, D, 12, method=method, max_bytes=1 << 20)
        got = _select_mp(rows, D, 12, method=method, max_bytes=1 << 20, workspace=workspace)
        assert torch.equal(got.indices, want.indices)
        assert torch.equal(got.values, want.values)
    assert workspace._buffers  # used


def test_training_releases_the_selection_workspace_at_each_epoch_end(monkeypatch):
    # The Gram matrix of a large dictionary is kept from batch to batch, never past an epoch.
    cleared = []
    real = _MatchingPursuitModule.release_buffers

    def release(self):
        cleared.append(bool(self._workspace()._buffers))
        real(self)
        assert not self._workspace()._buffers

    monkeypatch.setattr(_MatchingPursuitModule, "release_buffers", release)
    X = np.random.RandomState(0).standard_normal((96, 6)).astype(np.float32)
    # 64 atoms for batches of 32 rows at k=3: the large dictionaries' loss, without a
    # differentiable Gram matrix (see _prefer_gram_products).
    MatchingPursuitSAE(
        n_components=64, n_nonzero_coefs=3, max_iter=2, batch_size=32, random_state=0
    ).fit(X)
    assert cleared == [True, True]
