"""The torch modules under the estimators: what every SAE shares, and the untied encoder.

A module owns its parameters, initialises them and computes its training loss from explicit
inputs; it never reads the trainer. Its ``loss`` returns the trainer's
:class:`~skmpsae._train.trainer.LossOutput`.
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_array

from .._pursuit.encode import _decode_selected


class _SAEModule(torch.nn.Module):
    """Parameters every SAE has: a unit-norm dictionary (decoder) and a pre-encoder bias.

    A subclass implements ``loss(x, dead_mask=None, sparsity_scale=1.0)`` returning a
    :class:`LossOutput`: ``dead_mask`` (bool, one per latent) marks latents silent for long
    enough to count as dead, ``sparsity_scale`` in [0, 1] is the warm-up factor of a sparsity
    penalty. A module ignores the inputs its loss does not use.
    """

    def __init__(self, n_components, n_features, fit_intercept, dtype, device):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.dictionary = torch.nn.Parameter(torch.zeros(n_components, n_features, **kw))
        self.bias = torch.nn.Parameter(torch.zeros(n_features, **kw), requires_grad=fit_intercept)

    @torch.no_grad()
    def initialize(self, bias, dictionary) -> None:
        """Set the bias and the (unit-norm) dictionary; subclasses add their own parameters."""
        self.bias.copy_(bias)
        self.dictionary.copy_(dictionary)

    # Share of a fit's steps over which the learning rate decays to zero (see _Schedule).
    lr_decay_fraction = 0.2

    def make_optimizer(self, learning_rate) -> torch.optim.Optimizer:
        """The optimiser the trainer steps: Adam, with torch's fused kernel where it has one
        (one pass over each parameter instead of a dozen)."""
        fused = self.dictionary.device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.parameters(), lr=learning_rate, fused=fused)

    @torch.no_grad()
    def project_gradients(self) -> None:
        # The step then only rotates each atom; renormalising afterwards corrects the curvature
        # instead of fighting a radial component of the gradient. Without no_grad, the product
        # with the (grad-requiring) dictionary records an autograd graph on .grad at every step,
        # which leaked ~1.7 MB per step (14 GB over a benchmark).
        grad = self.dictionary.grad
        if grad is not None:
            grad -= (grad * self.dictionary).sum(dim=1, keepdim=True) * self.dictionary.detach()

    @torch.no_grad()
    def normalize(self) -> None:
        norms = self.dictionary.norm(dim=1, keepdim=True)
        self.dictionary /= norms.clamp_min(torch.finfo(norms.dtype).tiny)

    def release_buffers(self) -> None:
        """Free what the module kept from one training batch to the next (nothing here)."""

    def fired_counts(self, indices, active) -> torch.Tensor:
        """Samples that gave each latent a non-zero code, from selected ``indices`` and the
        matching ``active`` flags (both of shape (n_samples, k))."""
        fired = torch.zeros(self.dictionary.shape[0], dtype=torch.long, device=indices.device)
        fired.scatter_add_(0, indices.flatten(), active.flatten().long())
        return fired


class _EncoderModule(_SAEModule):
    """Adds an untied linear encoder, initialised as the transposed dictionary."""

    def __init__(self, n_components, n_features, fit_intercept, dtype, device):
        super().__init__(n_components, n_features, fit_intercept, dtype, device)
        kw = {"dtype": dtype, "device": device}
        self.encoder_weight = torch.nn.Parameter(torch.zeros(n_components, n_features, **kw))
        self.encoder_bias = torch.nn.Parameter(torch.zeros(n_components, **kw))

    @torch.no_grad()
    def initialize(self, bias, dictionary):
        super().initialize(bias, dictionary)
        # An encoder equal to the decoder's transpose starts as a tied autoencoder.
        self.encoder_weight.copy_(self.dictionary)
        self.encoder_bias.zero_()


def pre_activations(x, weight, encoder_bias, bias) -> torch.Tensor:
    """The encoders' pre-activations ``(x - b) @ W_enc.T + b_enc``, from the module's
    parameters in training or the published ones (``params``) in ``transform``."""
    return (x - bias) @ weight.T + encoder_bias


def auxk_term(x, x_hat, pre, dead_mask, dictionary, aux_coef) -> torch.Tensor | float:
    """``aux_coef`` times the AuxK loss (Gao et al., 2024), 0.0 when no latent is dead (or
    ``dead_mask`` is None): the ``k_aux`` largest pre-activations of dead latents reconstruct
    the residual the live latents leave, relative to the residual's variance. It pulls dead
    latents back towards directions the live ones miss."""
    if dead_mask is None or not aux_coef or not bool(dead_mask.any()):
        return 0.0
    n_features = x.shape[1]
    k_aux = min(int(dead_mask.sum()), max(1, n_features // 2))
    masked = pre.masked_fill(~dead_mask, float("-inf"))
    aux_values, aux_indices = masked.topk(k_aux, dim=1)
    aux_hat = _decode_selected(aux_indices, F.relu(aux_values), dictionary)
    residual = (x - x_hat).detach()
    scale = ((residual - residual.mean(dim=0)) ** 2).sum(dim=1).mean()
    # x is scaled to unit RMS deviation (squared norm ~ n_features per sample). Once the live
    # latents explain all but 1e-4 of that, the residual is rounding noise: normalising by it
    # would turn a tiny aux_hat into a loss of 1e5 and more (seen on constant data, reported
    # as a divergence).
    aux = ((residual - aux_hat) ** 2).sum(dim=1).mean() / scale.clamp_min(1e-4 * n_features)
    return aux_coef * aux


# How the encoder's parameters are published on a fitted estimator: module parameter name ->
# (attribute, whether it carries the data's units).
_ENCODER_PUBLISHED_PARAMS = {
    "encoder_weight": ("encoder_weights_", False),
    "encoder_bias": ("encoder_intercept_", True),
}


def initial_dictionary(Xc, n_components, dict_init, from_samples, generator) -> torch.Tensor:
    """Unit-norm initial atoms, shape (n_components, n_features), for centred scaled data.

    ``dict_init`` (an array) if given; else random centred samples with a little noise
    (``from_samples``) or random directions, drawn from the torch ``generator``. Rows of zero
    norm are replaced by random directions.
    """
    n_features = Xc.shape[1]
    if dict_init is not None:
        init = check_array(dict_init, dtype=[np.float64, np.float32], input_name="dict_init")
        if init.shape != (n_components, n_features):
            raise ValueError(
                f"dict_init has shape {init.shape}, expected (n_components, n_features) = "
                f"({n_components}, {n_features})."
            )
        atoms = torch.as_tensor(init, dtype=Xc.dtype, device=Xc.device).clone()
    elif from_samples:
        # Centred training samples are atoms that already fire on the data; a little noise
        # separates repeated or identical samples.
        rows = torch.randint(Xc.shape[0], (n_components,), generator=generator)
        noise = torch.randn(n_components, n_features, generator=generator, dtype=Xc.dtype)
        atoms = Xc[rows.to(Xc.device)] + 0.05 * noise.to(Xc.device)
    else:
        atoms = torch.randn(n_components, n_features, generator=generator, dtype=Xc.dtype)
    norms = atoms.norm(dim=1, keepdim=True)
    fallback = torch.randn(atoms.shape, generator=generator, dtype=atoms.dtype).to(atoms.device)
    atoms = torch.where(norms > 1e-6 * norms.max().clamp_min(1e-30), atoms, fallback)
    return atoms / atoms.norm(dim=1, keepdim=True)
