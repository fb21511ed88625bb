"""EleutherAI sparsify's directory layout, read without sparsify: :func:`from_sparsify` loads
a TopK SAE saved by ``SparseCoder.save_to_disk`` (``cfg.json`` + ``sae.safetensors``). A
model that skmpsae would encode differently is refused with a ``ValueError`` that says why,
never converted approximately.
"""

from .cfg import _CFG, _positive_int_field, _read_cfg
from .conversions import FROM_SPARSIFY, reader_of
from .safetensors import _check_arrays, _read_safetensors, _same_dtype

_SPARSIFY_WEIGHTS = "sae.safetensors"


def from_sparsify(directory):
    """Load a TopK SAE saved by EleutherAI's sparsify (``SparseCoder.save_to_disk``).

    Parameters
    ----------
    directory : str or path-like
        One hookpoint's directory, holding ``cfg.json`` and ``sae.safetensors`` (sparsify
        writes one per hookpoint, e.g. ``checkpoints/run/layers.3``).

    Returns
    -------
    estimator : TopKSAE
        Its ``transform`` gives the codes of sparsify's ``encode`` (scattered into a dense
        matrix), up to float rounding, and ``inverse_transform`` its ``decode``. The decoder
        rows are kept as saved (unit norm when sparsify's ``normalize_decoder`` is true, its
        default). Training counters are zero.

    Raises
    ------
    ValueError
        For a transcoder, a skip connection, the "groupmax" activation, a missing decoder, or
        tensors that do not match the config.

    See Also
    --------
    from_saelens : Load a SAELens SAE.
    """
    directory, cfg = _read_cfg(directory, _SPARSIFY_WEIGHTS, "sparsify")
    source = directory / _CFG
    d_in = _positive_int_field(cfg, "d_in", source)
    k = _positive_int_field(cfg, "k", source)
    for key, why in (
        ("transcode", "a transcoder predicts another module's output"),
        ("skip_connection", "its linear skip connection has no skmpsae equivalent"),
    ):
        if cfg.get(key, False):
            raise ValueError(f"{source}: {key}=true: {why}; only plain SAEs load.")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"{source}: activation {cfg['activation']!r}; only 'topk' loads.")
    n_latents = cfg.get("num_latents") or d_in * _positive_int_field(
        cfg, "expansion_factor", source
    )
    weights, _ = _read_safetensors(directory / _SPARSIFY_WEIGHTS, "sparsify weights")
    shapes = {
        "encoder.weight": (n_latents, d_in),
        "encoder.bias": (n_latents,),
        "W_dec": (n_latents, d_in),
        "b_dec": (d_in,),
    }
    _check_arrays(weights, shapes, directory / _SPARSIFY_WEIGHTS)
    arrays = {
        "components_": weights["W_dec"],
        "intercept_": weights["b_dec"],
        "encoder_weights_": weights["encoder.weight"],
        "encoder_intercept_": weights["encoder.bias"],
    }
    estimator = reader_of(FROM_SPARSIFY)(n_components=int(n_latents), n_nonzero_coefs=k)
    return estimator._set_fitted_state(_same_dtype(arrays))
