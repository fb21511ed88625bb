"""The SAELens directory layout, read and written without SAELens.

:func:`to_saelens` and :func:`from_saelens` write and read the directory layout that
``sae_lens.SAE.load_from_disk`` reads (``cfg.json`` + ``sae_weights.safetensors``). A model
that SAELens would encode differently is refused with a ``ValueError`` that says why, never
converted approximately.
"""

import json
from importlib import metadata as _metadata
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .cfg import _CFG, _positive_int_field, _read_cfg
from .conversions import FROM_SAELENS, reader_of, saelens_fields
from .safetensors import (
    _check_arrays,
    _check_fitted_sae,
    _read_safetensors,
    _same_dtype,
    _versions,
    _write_safetensors,
)

_SAELENS_WEIGHTS = "sae_weights.safetensors"
# Written as the SAELens version of exported configs when sae-lens is not installed: configs
# from before 6.0 are read through SAELens's legacy converter, which this layout is not.
_SAELENS_MIN_VERSION = "6.0.0"


def _saelens_version():
    try:
        return _metadata.version("sae-lens")
    except _metadata.PackageNotFoundError:
        return _SAELENS_MIN_VERSION


def to_saelens(estimator, directory, *, hook_name=None, model_name=None):
    """Export a fitted SAE to the directory layout ``sae_lens.SAE.load_from_disk`` reads.

    ``TopKSAE`` becomes SAELens's "topk" architecture, ``ReLUSAE`` "standard",
    ``MatchingPursuitSAE`` "matching_pursuit" (a fixed number of steps: no residual threshold,
    no stop on a repeated atom) and ``JumpReLUSAE`` "jumprelu". ``BatchTopKSAE`` and
    ``MatryoshkaSAE`` encode at inference with their learned ``threshold_``, and become
    "jumprelu" with that threshold for every latent, as SAELens saves its own trained BatchTopK
    SAEs (or "topk" if ``transform_n_nonzero_coefs`` is set). The SAELens model encodes and
    decodes as the estimator, up to float rounding (tested with sae-lens 6.54).

    Parameters
    ----------
    estimator : MatchingPursuitSAE, TopKSAE, ReLUSAE, BatchTopKSAE, MatryoshkaSAE or JumpReLUSAE
        A fitted estimator. Its inference settings are exported:
        ``transform_n_nonzero_coefs`` if set, else ``n_nonzero_coefs`` (matching pursuit and
        TopK) or ``threshold_`` (BatchTopK and Matryoshka).
    directory : str or path-like
        Created if needed; ``cfg.json`` and ``sae_weights.safetensors`` in it are replaced.
    hook_name : str, default=None
        Where the SAE reads the model (e.g. ``"blocks.3.hook_resid_post"`` for
        TransformerLens, or the module name given to :func:`skmpsae.activations.capture`),
        stored in the config's metadata for tools that splice it in. None: the hookpoint in
        the estimator's ``provenance_`` (a model fitted by ``skmpsae fit`` on captured
        activations), if any.
    model_name : str, default=None
        The model's name, stored in the metadata likewise; None: the model in
        ``provenance_``, if any.

    Returns
    -------
    directory : pathlib.Path

    Raises
    ------
    ValueError
        For settings SAELens would encode differently: a ``MatchingPursuitSAE`` with
        ``positive_code=False``, ``transform_algorithm="omp"`` or ``transform_tol`` set, or a
        ``JumpReLUSAE`` with a negative threshold; for an estimator that has no SAELens
        conversion (one registered beside the six, or not registered).

    See Also
    --------
    from_saelens : The reverse.
    save : skmpsae's own file, which keeps every hyper-parameter.
    """
    _check_fitted_sae(estimator, "to_saelens")
    provenance = getattr(estimator, "provenance_", None) or {}
    if hook_name is None:
        hook_name = provenance.get("hookpoint")
    if model_name is None:
        model_name = provenance.get("model")
    name = type(estimator).__name__
    W_dec = estimator.components_
    cfg = {
        "d_in": int(W_dec.shape[1]),
        "d_sae": int(W_dec.shape[0]),
        "dtype": str(W_dec.dtype),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    fields = saelens_fields(estimator)
    cfg.update(fields.cfg)
    tensors = {"W_dec": W_dec, "b_dec": estimator.intercept_, **fields.tensors}
    cfg["metadata"] = {
        "sae_lens_version": _saelens_version(),
        "sae_lens_training_version": None,
        "hook_name": hook_name,
        "model_name": model_name,
        "skmpsae_version": _versions()["skmpsae"],
        "skmpsae_estimator": name,
    }
    if provenance:
        cfg["metadata"]["skmpsae_provenance"] = provenance
    if hasattr(estimator, "prefix_sizes_"):
        # Tools that know Matryoshka SAEs can truncate the exported latents at these sizes.
        cfg["metadata"]["skmpsae_prefix_sizes"] = [int(s) for s in estimator.prefix_sizes_]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_safetensors(
        directory / _SAELENS_WEIGHTS, {k: np.array(v, order="C") for k, v in tensors.items()}
    )
    with atomic_write(directory / _CFG) as file:
        file.write(json.dumps(cfg, indent=2).encode())
    return directory


def _saelens_architecture(cfg, source):
    architecture = cfg.get("architecture")
    if architecture is None:  # configs written before SAELens 6
        activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if activation == "topk" and "k" in kwargs:
            cfg = {**cfg, "k": kwargs["k"]}
            architecture = "topk"
        elif activation == "relu":
            architecture = "standard"
        else:
            raise ValueError(
                f"{source}: activation function {activation!r} has no skmpsae estimator."
            )
    if architecture not in FROM_SAELENS:
        hint = (
            " (a training SAE: SAELens saves it for inference as 'jumprelu', which loads)"
            if "batchtopk" in str(architecture)
            else ""
        )
        supported = ", ".join(
            f"{arch!r} -> {reader_of(name).__name__}" for arch, name in FROM_SAELENS.items()
        )
        raise ValueError(
            f"{source}: SAELens architecture {architecture!r} has no skmpsae estimator{hint} "
            f"(supported: {supported})."
        )
    return architecture, cfg


def from_saelens(directory):
    """Load an SAE saved by SAELens (``SAE.save_model``) or by :func:`to_saelens`.

    Parameters
    ----------
    directory : str or path-like
        Holds ``cfg.json`` and ``sae_weights.safetensors``.

    Returns
    -------
    estimator : ReLUSAE, TopKSAE, JumpReLUSAE or MatchingPursuitSAE
        For the "standard", "topk", "jumprelu" (also what SAELens saves a trained BatchTopK or
        Matryoshka SAE as) and "matching_pursuit" architectures; ``transform``
        gives the codes SAELens's ``encode`` gives, up to float rounding. Training counters
        are zero (``n_iter_ = 0``); float16 and bfloat16 weights are widened to float32.

    Raises
    ------
    ValueError
        For another architecture, a config SAELens would encode differently from every
        skmpsae estimator (input normalisation, ``rescale_acts_by_decoder_norm``, matching
        pursuit that stops on a residual threshold or a repeated atom), or tensors whose
        names or shapes do not match the config.

    See Also
    --------
    to_saelens : The reverse.
    from_sparsify : Load a sparsify TopK SAE.

    Notes
    -----
    With ``apply_b_dec_to_input=False``, SAELens does not subtract ``b_dec`` before encoding;
    the encoders absorb this into ``encoder_intercept_`` (``b_enc + b_dec @ W_enc``), and a
    matching-pursuit SAE gets a zero ``intercept_``. SAELens's JumpReLU applies a ReLU before
    its thresholds, skmpsae's does not: a negative threshold loads as zero, which gives the
    same codes.
    """
    directory, cfg = _read_cfg(directory, _SAELENS_WEIGHTS, "SAELens")
    source = directory / _CFG
    architecture, cfg = _saelens_architecture(cfg, source)
    d_in, d_sae = (_positive_int_field(cfg, key, source) for key in ("d_in", "d_sae"))
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(
            f"{source}: normalize_activations={cfg['normalize_activations']!r} rescales inputs "
            "at run time, which skmpsae estimators do not; only 'none' is supported."
        )
    weights, _ = _read_safetensors(directory / _SAELENS_WEIGHTS, "SAELens weights")
    subtract_b_dec = bool(cfg.get("apply_b_dec_to_input", True))
    shapes = {"W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if architecture == "matching_pursuit":
        if cfg.get("stop_on_duplicate_support", True):
            raise ValueError(
                f"{source}: stop_on_duplicate_support is true: SAELens stops a sample when an "
                "atom repeats, skmpsae's matching pursuit runs a fixed number of steps. Set it "
                "to false in cfg.json to load the dictionary with skmpsae's encoder."
            )
        if float(cfg.get("residual_threshold", 0.0) or 0.0) > 0:
            raise ValueError(
                f"{source}: residual_threshold={cfg['residual_threshold']} stops after a step "
                "once the residual norm is below it, which no skmpsae setting reproduces "
                "exactly; set it to 0 in cfg.json to load with a fixed number of steps."
            )
        steps = cfg.get("max_iterations") or d_in
        _check_arrays(weights, shapes, directory / _SAELENS_WEIGHTS)
        estimator = reader_of(FROM_SAELENS[architecture])(
            n_components=d_sae, n_nonzero_coefs=int(steps), fit_intercept=subtract_b_dec
        )
        arrays = {"components_": weights["W_dec"], "intercept_": weights["b_dec"]}
        if not subtract_b_dec:
            arrays["intercept_"] = np.zeros_like(weights["b_dec"])
        return estimator._set_fitted_state(_same_dtype(arrays), fitted=_provenance_from_cfg(cfg))
    if cfg.get("rescale_acts_by_decoder_norm", False):
        raise ValueError(
            f"{source}: rescale_acts_by_decoder_norm=true ranks latents by pre-activation times "
            "decoder norm; skmpsae's TopK ranks raw pre-activations."
        )
    shapes.update(W_enc=(d_in, d_sae), b_enc=(d_sae,))
    if architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    _check_arrays(weights, shapes, directory / _SAELENS_WEIGHTS)
    b_enc = weights["b_enc"]
    if not subtract_b_dec:
        b_enc = b_enc + weights["b_dec"] @ weights["W_enc"]
    params = {"n_components": d_sae}
    if architecture == "topk":
        params["n_nonzero_coefs"] = _positive_int_field(cfg, "k", source)
    estimator = reader_of(FROM_SAELENS[architecture])(**params)
    arrays = {
        "components_": weights["W_dec"],
        "intercept_": weights["b_dec"],
        "encoder_weights_": weights["W_enc"].T,
        "encoder_intercept_": b_enc,
    }
    if architecture == "jumprelu":
        # relu(pre) * (pre > t) == pre * (pre > max(t, 0)), skmpsae's encoding.
        arrays["threshold_"] = np.maximum(weights["threshold"], 0)
    return estimator._set_fitted_state(_same_dtype(arrays), fitted=_provenance_from_cfg(cfg))


def _provenance_from_cfg(cfg):
    """The capture settings that :func:`to_saelens` stored, as ``{"provenance_": ...}``."""
    metadata = cfg.get("metadata")
    provenance = metadata.get("skmpsae_provenance") if isinstance(metadata, dict) else None
    return {"provenance_": provenance} if isinstance(provenance, dict) else {}
