"""The contracts between the training loop and the models: what a module's ``loss`` returns,
what the trainer needs of a module and of its optimiser. The models implement them; the
trainer (``trainer.py``) relies on nothing else."""

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import torch


class LossOutput(NamedTuple):
    """What a module's ``loss`` returns for one batch.

    Attributes
    ----------
    loss : torch.Tensor
        Scalar training loss (differentiable), relative to the data variance.
    fired : torch.Tensor of dtype int64 and shape (n_components,)
        How many samples of the batch gave each latent a non-zero code.
    """

    loss: torch.Tensor
    fired: torch.Tensor


class Optimizer(Protocol):
    """What the trainer needs of an optimiser: the part of ``torch.optim.Optimizer``'s
    interface it calls (``torch.optim.Adam``, or matching pursuit's ``_AtomAdam``)."""

    param_groups: list[dict[str, Any]]

    def step(self) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class SAEModule(Protocol):
    """What the trainer needs of a model's torch module: the contract every module under an
    estimator (``_models/module.py``'s ``_SAEModule`` and its subclasses) meets.

    A module owns its parameters (``dictionary`` among them, one unit-norm atom per row),
    computes its loss from explicit inputs and never reads the trainer.
    """

    dictionary: torch.nn.Parameter
    # Share of a fit's steps over which the learning rate decays to zero (see _Schedule).
    lr_decay_fraction: float

    def loss(
        self, x: torch.Tensor, dead_mask: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> LossOutput:
        """The training loss on the scaled batch ``x``: ``dead_mask`` (bool, one per latent)
        marks latents silent for long enough to count as dead, ``sparsity_scale`` in [0, 1]
        is the warm-up factor of a sparsity penalty; a module ignores those it does not use."""
        ...

    def make_optimizer(self, learning_rate: float) -> Optimizer:
        """The optimiser of the module's parameters."""
        ...

    def project_gradients(self) -> None:
        """Adjust the gradients before the optimiser's step (e.g. keep atoms on the sphere)."""
        ...

    def normalize(self) -> None:
        """Restore the parameters' constraints after the step (unit-norm atoms...)."""
        ...

    def release_buffers(self) -> None:
        """Free what the module kept from one training batch to the next."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[Any]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any: ...
