"""What each registered estimator becomes in another library's format, and back: one table
keyed by the registry's short names (``skmpsae._models.registry``).

The formats are conversions, not names: BatchTopK and Matryoshka encode at inference with a
learned threshold, and become SAELens's "jumprelu" with that threshold for every latent; a
JumpReLU with negative thresholds is refused, since SAELens applies a ReLU first; sparsify's
layout holds TopK SAEs only. The models know nothing of these formats. An estimator with no
entry here has no export, and says so in one line.
"""

from typing import NamedTuple

import numpy as np

from .._models.registry import estimator_specs, spec_of


class SAELensFields(NamedTuple):
    """An estimator's part of a SAELens config: the ``cfg.json`` fields that name and set up
    its architecture, and the weights beyond ``W_dec`` and ``b_dec``."""

    cfg: dict
    tensors: dict


def _mp_fields(estimator):
    """Matching pursuit: a fixed number of steps, or a ValueError saying what SAELens's matching
    pursuit cannot do."""
    if not estimator.positive_code:
        raise ValueError(
            "SAELens's matching pursuit keeps positive codes only; this MatchingPursuitSAE has "
            "positive_code=False (signed codes), which SAELens would encode differently."
        )
    if estimator.transform_algorithm != "mp":
        raise ValueError(
            f"transform_algorithm={estimator.transform_algorithm!r} (orthogonal matching "
            "pursuit) has no SAELens equivalent; set_params(transform_algorithm='mp') first."
        )
    if estimator.transform_tol is not None:
        raise ValueError(
            "transform_tol is not exported: SAELens's residual_threshold tests the residual "
            "after each step, not before, so some samples would get one more atom. Export with "
            "set_params(transform_tol=None, transform_n_nonzero_coefs=k)."
        )
    steps = int(estimator.transform_n_nonzero_coefs or estimator.n_nonzero_coefs)
    cfg = {
        "architecture": "matching_pursuit",
        "residual_threshold": 0.0,
        "max_iterations": steps,
        "stop_on_duplicate_support": False,
    }
    return SAELensFields(cfg, {})


def _encoder_tensors(estimator):
    return {"W_enc": estimator.encoder_weights_.T, "b_enc": estimator.encoder_intercept_}


def _jumprelu_with(estimator, threshold):
    tensors = {**_encoder_tensors(estimator), "threshold": threshold}
    return SAELensFields({"architecture": "jumprelu"}, tensors)


def _topk_fields(estimator):
    n_components = estimator.n_components
    k = min(estimator.transform_n_nonzero_coefs or estimator.n_nonzero_coefs, n_components)
    cfg = {"architecture": "topk", "k": int(k), "rescale_acts_by_decoder_norm": False}
    return SAELensFields(cfg, _encoder_tensors(estimator))


def _batch_threshold_fields(estimator):
    """BatchTopK and Matryoshka: "topk" when ``transform_n_nonzero_coefs`` is set, else
    "jumprelu" with the learned threshold for every latent."""
    if estimator.transform_n_nonzero_coefs is not None:
        return _topk_fields(estimator)
    # transform keeps relu(pre) where relu(pre) > threshold_: SAELens's JumpReLU
    # (relu(pre) where pre > threshold) with that threshold for every latent, as SAELens
    # saves its own trained BatchTopK SAEs. A negative threshold keeps every positive
    # activation, as a zero one does.
    dtype = estimator.components_.dtype
    threshold = np.full(estimator.n_components, max(float(estimator.threshold_), 0.0), dtype=dtype)
    return SAELensFields(
        {"architecture": "jumprelu"}, {**_encoder_tensors(estimator), "threshold": threshold}
    )


def _jumprelu_fields(estimator):
    threshold = np.asarray(estimator.threshold_)
    if np.any(threshold < 0):
        raise ValueError(
            "this JumpReLUSAE has negative thresholds, which let negative codes through; "
            "SAELens's JumpReLU applies a ReLU first and would zero them."
        )
    return SAELensFields(
        {"architecture": "jumprelu"}, {**_encoder_tensors(estimator), "threshold": threshold}
    )


def _standard_fields(estimator):
    return SAELensFields({"architecture": "standard"}, _encoder_tensors(estimator))


# Registry name -> the SAELens fields of a fitted estimator of that name.
TO_SAELENS = {
    "mp": _mp_fields,
    "topk": _topk_fields,
    "batchtopk": _batch_threshold_fields,
    "matryoshka": _batch_threshold_fields,
    "jumprelu": _jumprelu_fields,
    "relu": _standard_fields,
}

# SAELens architecture -> the registry name of the estimator that reads it. SAELens saves its
# trained BatchTopK and Matryoshka SAEs as "jumprelu", which loads as a JumpReLUSAE.
FROM_SAELENS = {
    "standard": "relu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "matching_pursuit": "mp",
}

# sparsify's layout holds TopK SAEs: the registry name of the estimator that reads them.
FROM_SPARSIFY = "topk"


def saelens_fields(estimator):
    """The :class:`SAELensFields` of a fitted ``estimator``, or a ValueError in one line for
    an estimator that has no SAELens export or settings SAELens would encode differently."""
    name = type(estimator).__name__
    try:
        convert = TO_SAELENS.get(spec_of(estimator).name)
    except KeyError:
        convert = None
    if convert is None:
        exported = ", ".join(
            spec.estimator.__name__
            for short, spec in estimator_specs().items()
            if short in TO_SAELENS
        )
        raise ValueError(f"{name} has no SAELens export; the estimators that have one: {exported}.")
    return convert(estimator)


def reader_of(name):
    """The estimator class registered as ``name`` (a value of :data:`FROM_SAELENS` or
    :data:`FROM_SPARSIFY`)."""
    return estimator_specs()[name].estimator
