"""The fitted state of an estimator: the one writer of it, and the published parameters.

Fitted state is published as numpy arrays in the data's own units (``components_``,
``intercept_``, ...), never as pickled torch objects, so a model fitted on a GPU loads on a
CPU-only machine.
"""

from typing import Any

import numpy as np
import torch


def published_arrays(estimator) -> dict[str, np.ndarray]:
    """The published parameters of a fitted ``estimator``, {attribute: array}."""
    return {attr: getattr(estimator, attr) for attr, _ in estimator._published_params.values()}


def published_shapes(estimator, n_features) -> dict[str, tuple[int, ...]]:
    """{attribute: shape} of the published arrays of ``estimator`` for ``n_features`` inputs,
    read from the model's own module built on the meta device (no memory)."""
    module = estimator._make_module(
        n_features=n_features, dtype=torch.float32, device=torch.device("meta")
    )
    return {
        attr: tuple(getattr(module, name).shape)
        for name, (attr, _) in estimator._published_params.items()
    }


def set_fitted_state(
    estimator,
    arrays,
    *,
    n_features_in_=None,
    feature_names_in_=None,
    n_iter=0,
    n_steps=0,
    loss_curve=(),
    n_dead=None,
    data_scale=1.0,
    fitted=None,
    reset=True,
) -> Any:
    """Make the estimator fitted: the one place fitted state is written, by ``fit``,
    ``partial_fit``, :func:`skmpsae.io.load`, ``from_saelens`` and ``from_sparsify``.

    ``arrays`` are the published parameters (already checked), ``feature_names_in_`` the
    input's column names or None, ``data_scale`` the RMS deviation the optimiser divides
    the data by (so that ``partial_fit`` can go on), and ``fitted`` further fitted
    attributes by name (``prefix_sizes_``, ``validation_scores_``, ...). With ``reset``
    (a new model) no public fitted attribute of an earlier model survives, such as the
    ``provenance_`` of rows it was fitted on before.
    """
    if reset:
        for name in [n for n in vars(estimator) if n.endswith("_") and not n.startswith("_")]:
            delattr(estimator, name)
    for name, value in arrays.items():
        # A 0-d array (BatchTopK's threshold_) is published as a numpy scalar.
        value = np.array(value, order="C")
        setattr(estimator, name, value if value.ndim else value[()])
    estimator.n_features_in_ = int(
        arrays["components_"].shape[1] if n_features_in_ is None else n_features_in_
    )
    if feature_names_in_ is not None:
        estimator.feature_names_in_ = np.asarray(feature_names_in_, dtype=object)
    else:
        estimator.__dict__.pop("feature_names_in_", None)
    estimator.n_iter_ = int(n_iter)
    estimator.n_steps_ = int(n_steps)
    estimator.loss_curve_ = [float(v) for v in loss_curve]
    estimator.n_dead_components_ = None if n_dead is None else int(n_dead)
    estimator._data_scale = float(data_scale)
    for name, value in (fitted or {}).items():
        setattr(estimator, name, value)
    # Derived tensors, the live trainer and Adam moments of an earlier model go stale.
    estimator.__dict__.setdefault("_tensor_cache", {}).clear()
    estimator.__dict__.pop("_trainer_state", None)
    estimator.__dict__.pop("_live_trainer", None)
    return estimator
