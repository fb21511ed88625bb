"""MP-SAE's torch module: the selection (with the path it measured carried in its state), the
differentiable loss, early stops and the revival term. The estimator is
``matching_pursuit.py``."""

from typing import NamedTuple

import torch

from .._pursuit.autotune import measured_selection
from .._pursuit.encode import _decode_selected
from .._pursuit.grad import (
    _mp_coefficients,
    _mp_squared_error,
    _prefer_gram_products,
    _SelfProducts,
)
from .._pursuit.gram import _DEFAULT_MAX_BYTES, _gram, _Workspace
from .._pursuit.selection import PATHS, _plan_mp, _select_mp
from .._train.contracts import LossOutput
from .._train.optim import _AtomAdam
from .module import _SAEModule


class _Selected(NamedTuple):
    """What :meth:`_MatchingPursuitModule._select` returns."""

    indices: torch.Tensor  # (n, k) long: the atom of each step
    active: torch.Tensor  # (n, k) float: 1 for the steps kept (see _steps_kept), else 0
    values: torch.Tensor  # (n, k): the selection's step values
    gram: torch.Tensor | None  # the whole D D^T the selection used (no autograd), if any


class _MatchingPursuitModule(_SAEModule):
    """Tied dictionary; loss = squared reconstruction error of k matching-pursuit steps.

    Training never unrolls the pursuit under autograd: the atoms are chosen without gradients
    (Gram path) and the coefficients recomputed differentiably from the chosen atoms only, which
    gives the unrolled loop's exact gradients at a fraction of its memory. The loss skips the
    reconstruction too: it is MP's energy identity (``_mp_squared_error``).
    """

    def __init__(
        self,
        n_components,
        n_features,
        n_nonzero_coefs,
        positive,
        fit_intercept,
        dtype,
        device,
        max_bytes=_DEFAULT_MAX_BYTES,
        selection_dtype=None,
        revival_coef=0.0,
        min_cosine=0.0,
        selection_method="auto",
    ):
        super().__init__(n_components, n_features, fit_intercept, dtype, device)
        self.min_cosine = min_cosine
        self.selection_method = selection_method
        # The path every batch without a Gram matrix takes: measured on the first such batch
        # ("auto"), forced, or None (the cost model per batch); and the measurement's seconds.
        self.selection_path = selection_method if selection_method in PATHS else None
        self.selection_seconds = {}
        # The path the last batch took, published as selection_method_.
        self.last_path = None
        self.n_nonzero_coefs = n_nonzero_coefs
        self.positive = positive
        self.max_bytes = max_bytes
        self.selection_dtype = selection_dtype
        # Distinct atoms the last batch selected: the selection planner's estimate for the next.
        self.n_distinct = None
        self.revival_coef = revival_coef

    # The learning rate decays over the last half of a fit, not the last 20% (the other SAEs'
    # default, _SAEModule's): measured in docs/benchmarks.md, "Where the defaults come from".
    lr_decay_fraction = 0.5

    def make_optimizer(self, learning_rate):
        """Adam with one second moment per atom (see ``_train/optim.py``)."""
        return _AtomAdam(self.parameters(), lr=learning_rate)

    def _select(self, centred, gram=None, correlations=None) -> _Selected:
        """The atoms (n, k) matching pursuit selects for the centred rows, without autograd
        (see :class:`_Selected`)."""
        X, dictionary = centred.detach(), self.dictionary.detach()
        workspace = self._workspace()
        kwargs = {
            "positive": self.positive,
            "distinct": self.n_distinct,
            "max_bytes": self.max_bytes,
            "compute_dtype": self.selection_dtype,
            "workspace": workspace,
        }
        if gram is None and self.selection_path is None and self.selection_method == "auto":
            indices, values, self.selection_path, self.selection_seconds = measured_selection(
                X, dictionary, self.n_nonzero_coefs, **kwargs
            )
            self.last_path = self.selection_path
        else:
            # A Gram matrix at hand makes its path the cheapest, unless one is forced.
            method = self.selection_path or "auto"
            if gram is not None and self.selection_method == "auto":
                method = "gram"
            elif method == "gram" and self.selection_dtype is None:
                # Built here rather than inside the selection, so that the loss reads the
                # selected atoms' products off it too; planned first, so that a budget too
                # small for it raises the selection's error.
                (n, n_features), K = X.shape, dictionary.shape[0]
                k, size = self.n_nonzero_coefs, X.element_size()
                _plan_mp(n, K, n_features, k, size, X.device, self.max_bytes, method="gram")
                gram = _gram(dictionary, workspace.get("gram", (K, K), X.dtype, X.device))
            selection = _select_mp(
                X,
                dictionary,
                self.n_nonzero_coefs,
                gram=None if gram is None else gram.detach(),
                method=method,
                correlations=correlations,
                **kwargs,
            )
            indices, values = selection.indices, selection.values
            if selection.plan is not None:
                self.last_path = selection.plan.method
        taken = _steps_kept(X, values, self.min_cosine)
        selected = torch.zeros(self.dictionary.shape[0], dtype=torch.bool, device=values.device)
        self.n_distinct = int(selected.index_fill_(0, indices[taken], True).sum())
        gram = None if gram is None else gram.detach()
        return _Selected(indices, taken.to(centred.dtype), values, gram)

    # The measured path travels with the module's state (checkpoints, pickled trainers), so
    # that a resumed run takes the path of the run it continues: paths agree only up to
    # rounding. A tensor, as the trainer's state holds tensors only: the path's index in
    # PATHS (-1: none yet), then the measured seconds of each (NaN: not measured).
    def get_extra_state(self):
        path = -1 if self.selection_path is None else PATHS.index(self.selection_path)
        seconds = [self.selection_seconds.get(p, float("nan")) for p in PATHS]
        return torch.tensor([path, *seconds], dtype=torch.float64)

    def set_extra_state(self, state):
        if self.selection_method != "auto":
            return  # a forced path or the cost model: nothing was measured
        path, *seconds = state.tolist()
        self.selection_path = None if path < 0 else PATHS[int(path)]
        self.selection_seconds = {p: s for p, s in zip(PATHS, seconds, strict=True) if s == s}

    def _workspace(self):
        """The selection's Gram matrix and correlation blocks, reused from batch to batch
        until :meth:`release_buffers` (made here: modules pickled before it existed lack it)."""
        return self.__dict__.setdefault("workspace", _Workspace())

    def release_buffers(self):
        self._workspace().clear()

    def forward(self, x):
        """Reconstruction of ``x`` (differentiable), the selected atoms and the float mask of
        the steps taken."""
        xc = x - self.bias
        dictionary, k = self.dictionary, self.n_nonzero_coefs
        gram = None
        if _prefer_gram_products(x.shape[0], dictionary.shape[0], k):
            gram = dictionary @ dictionary.T
        indices, active, *_ = self._select(xc, gram)
        coefs = _mp_coefficients(xc, dictionary, indices, active, gram=gram)
        x_hat = _decode_selected(indices, coefs, dictionary) + self.bias
        return x_hat, indices, active

    def loss(self, x, dead_mask=None, sparsity_scale=1.0):
        """LossOutput on batch ``x``; ``dead_mask`` (bool, one per atom; None: none is dead)
        selects the atoms the revival term pulls back; ``sparsity_scale`` is unused (no
        sparsity penalty)."""
        revive = self.revival_coef and dead_mask is not None and bool(dead_mask.any())
        with torch.no_grad():
            centred = x - self.bias
        if _prefer_gram_products(x.shape[0], self.dictionary.shape[0], self.n_nonzero_coefs):
            # Small dictionaries: the correlations and the Gram matrix the selection needs
            # anyway give the coefficients (see _mp_squared_error).
            with torch.no_grad():
                correlations = centred @ self.dictionary.T
            gram = _SelfProducts.apply(self.dictionary)
            indices, active, *_ = self._select(centred, gram, correlations.clone())
            error, coefs = _mp_squared_error(
                centred, self.bias, self.dictionary, indices, active, gram, correlations
            )
        else:
            indices, active, values, selection_gram = self._select(centred)
            error, coefs = _mp_squared_error(
                centred,
                self.bias,
                self.dictionary,
                indices,
                active,
                selection_gram=selection_gram,
                values=values,
            )
        x_hat = None
        if revive:
            with torch.no_grad():
                x_hat = _decode_selected(indices, coefs, self.dictionary) + self.bias
        loss = error / x.numel()
        if revive:
            loss = loss + self.revival_coef * _revival_term(x - x_hat, self.dictionary, dead_mask)
        return LossOutput(loss, self.fired_counts(indices, active))


def _steps_kept(centred, values, min_cosine):
    """Mask (n, k) of the pursuit steps kept: those taken (non-zero) up to the first whose
    atom's cosine with the residual, ``|value| / ||residual before the step||``, is below
    ``min_cosine``. The residual norms come from matching pursuit's energy identity,
    ``||r_s||^2 = ||x||^2 - sum_{t<s} value_t^2``; the steps before a stop do not depend on
    the ones after it, so the kept steps are exactly those of a pursuit that stops there."""
    taken = values != 0
    if not min_cosine:
        return taken
    energy = (centred**2).sum(dim=1, keepdim=True)
    squares = values**2
    before = (energy - torch.cumsum(squares, dim=1) + squares).clamp_min(0)
    tiny = torch.finfo(values.dtype).tiny
    above = values.abs() >= min_cosine * before.sqrt().clamp_min(tiny)
    return torch.cumprod((above & taken).to(torch.int8), dim=1).bool()


def _revival_term(residual, dictionary, dead_mask):
    """Minus the mean, over dead atoms, of each one's best cosine with a residual of the batch.

    Its gradient turns every dead atom towards the residual it is already closest to, so that
    dead atoms spread over what the live atoms miss (a term pulling all of them towards the
    mean residual, as overcomplete suggests for its MP-SAE, would bunch them together) until
    the pursuit picks them again. The residual carries no gradient: live atoms are untouched.
    """
    residual = residual.detach()
    norms = residual.norm(dim=1, keepdim=True).clamp_min(torch.finfo(residual.dtype).tiny)
    cosines = (residual / norms) @ dictionary[dead_mask].T  # (n_samples, n_dead)
    return -cosines.max(dim=0).values.mean()
