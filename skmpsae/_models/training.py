"""Between an estimator and its training: a module's start from the data, and the moves of
parameters between the trainer's module (scaled) and the published arrays (the data's units).

Plain functions of explicit arguments: the estimator (``base.py``) calls them, builds a
``_Trainer`` and runs it through ``_train.loop.train_epochs``; none of them reads an estimator.
"""

import warnings
from typing import Protocol

import numpy as np
import torch
from sklearn.utils import check_random_state

from .._metrics.reconstruction import explained_variance
from .._train.tensors import (
    _OUTLIER_RATIO,
    _as_tensor,
    _outlier_rows,
    _rms_scale,
    _row_chunks,
    _sample_rows,
)
from .._utils import torch_generator
from .module import initial_dictionary


class Encoder(Protocol):
    """An estimator's encoder over plain tensors (its ``_encode``): dense codes of shape
    (n_samples, n_components) of the rows ``X`` from the published parameters ``params``, a
    dict of tensors named as the estimator's published attributes (``components_``...)."""

    def __call__(self, X: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor: ...


# Rows of X that set the data scale, the bias and the sample atoms of a new model.
_INIT_SAMPLE_ROWS = 16384


def initialize_module(
    module, X, *, fit_intercept, dict_init, init_from_samples, random_state, name
) -> float:
    """Set ``module``'s initial bias and atoms from a sample of ``X``; return the data scale
    (the RMS deviation the trainer divides the data by).

    The sample leaves out rows far larger than the rest, with a warning naming them (``name``
    is the estimator's): one row of 1e30 among unit-scale data would otherwise set the scale
    alone, and the model would fit nothing else.
    """
    sample, sample_rows = _sample_rows(X, check_random_state(random_state), _INIT_SAMPLE_ROWS)
    sample = _without_outliers(sample, sample_rows, name)
    scale = _rms_scale(sample)
    Xs = _as_tensor(sample, module.dictionary.dtype, "cpu") / scale
    bias = Xs.mean(dim=0) if fit_intercept else torch.zeros_like(Xs[0])
    n_components = module.dictionary.shape[0]
    generator = torch_generator(random_state)
    atoms = initial_dictionary(Xs - bias, n_components, dict_init, init_from_samples, generator)
    module.initialize(bias, atoms)
    return scale


def _without_outliers(sample, sample_rows, name):
    outliers, ratios = _outlier_rows(sample)
    if outliers.size == 0:
        return sample
    shown = ", ".join(str(i) for i in sample_rows[outliers[:10]])
    more = f" and {outliers.size - 10} more" if outliers.size > 10 else ""
    warnings.warn(
        f"{name}: rows {shown}{more} of X lie over {_OUTLIER_RATIO:g} times "
        f"farther from the median sample than the median row does (up to "
        f"{float(ratios.max()):.3g} times): they would dominate the squared loss. The data "
        "scale is set without them; remove or clip them if they are errors.",
        UserWarning,
        stacklevel=4,
    )
    keep = np.ones(sample.shape[0], dtype=bool)
    keep[outliers] = False
    return sample[keep] if keep.any() else sample


@torch.no_grad()
def load_published(module, arrays, published_params, scale) -> None:
    """Copy published ``arrays`` ({attribute: array}, the data's units) into ``module``."""
    dtype, device = module.dictionary.dtype, module.dictionary.device
    for name, (attr, has_units) in published_params.items():
        value = torch.as_tensor(arrays[attr], dtype=dtype, device=device)
        getattr(module, name).copy_(value / scale if has_units else value)


def module_tensors(module, published_params, scale) -> dict[str, torch.Tensor]:
    """``module``'s parameters as {attribute: tensor} in the data's units, on its device."""
    tensors = {}
    for name, (attr, has_units) in published_params.items():
        value = getattr(module, name).detach()
        tensors[attr] = value * scale if has_units else value
    return tensors


def module_arrays(module, published_params, scale) -> dict[str, np.ndarray]:
    """``module``'s parameters as {attribute: numpy array} in the data's units: what an
    estimator publishes (copies, in the module's dtype, on the CPU)."""
    np_dtype = np.float32 if module.dictionary.dtype == torch.float32 else np.float64
    return {
        attr: tensor.cpu().numpy().astype(np_dtype, copy=True)
        for attr, tensor in module_tensors(module, published_params, scale).items()
    }


@torch.no_grad()
def validation_score(trainer, *, X_validation, encode: Encoder, derive, published_params) -> float:
    """Held-out R2 of the ``trainer``'s module on ``X_validation``, encoded as the estimator's
    ``transform`` would: ``encode(X, params)`` and ``derive(params)`` are the estimator's
    encoder and its derived tensors."""
    module = trainer.module
    params = module_tensors(module, published_params, trainer.scale)
    params.update(derive(params))
    dtype, device = module.dictionary.dtype, module.dictionary.device
    X_hat = np.empty_like(X_validation)
    for start, chunk in _row_chunks(X_validation, device, dtype):
        recon = encode(chunk, params) @ params["components_"] + params["intercept_"]
        X_hat[start : start + chunk.shape[0]] = recon.cpu().numpy()
    return explained_variance(X_validation, X_hat)
