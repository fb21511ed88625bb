"""Safe files for fitted SAEs, and the SAELens and sparsify formats.

:func:`save` and :func:`load` keep a fitted estimator in one safetensors file: the parameters
as tensors, the hyper-parameters, fitted counters and library versions as JSON in the file's
header, and a SHA-256 digest of every tensor. Loading parses JSON and raw little-endian numbers
only, so unlike a pickle (joblib) it never executes code, and a truncated or altered file is
refused.

:func:`to_saelens` and :func:`from_saelens` write and read the directory layout that
``sae_lens.SAE.load_from_disk`` reads (``cfg.json`` + ``sae_weights.safetensors``);
:func:`from_sparsify` reads a TopK SAE saved by EleutherAI's sparsify (``cfg.json`` +
``sae.safetensors``). None of them needs those packages installed. A model that the other
format would encode differently is refused with a ``ValueError`` that says why, never
converted approximately.
"""

import hashlib
import json
import warnings
from importlib import metadata as _metadata
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from ._atomic import atomic_write

_FORMAT = "skmpsae"
_FORMAT_VERSION = 1
_SAELENS_WEIGHTS = "sae_weights.safetensors"
_SPARSIFY_WEIGHTS = "sae.safetensors"
_CFG = "cfg.json"
# Written as the SAELens version of exported configs when sae-lens is not installed: configs
# from before 6.0 are read through SAELens's legacy converter, which this layout is not.
_SAELENS_MIN_VERSION = "6.0.0"


def _estimator_classes():
    from . import MatchingPursuitSAE, ReLUSAE, TopKSAE

    return {cls.__name__: cls for cls in (MatchingPursuitSAE, TopKSAE, ReLUSAE)}


def _check_fitted_sae(estimator, what):
    from sklearn.utils.validation import check_is_fitted

    from ._base import _BaseSAE

    if not isinstance(estimator, _BaseSAE):
        raise TypeError(
            f"{what} takes a fitted MatchingPursuitSAE, TopKSAE or ReLUSAE, got "
            f"{type(estimator).__name__}."
        )
    check_is_fitted(estimator)


def _published_arrays(estimator):
    return {attr: getattr(estimator, attr) for attr, _ in estimator._published_params.values()}


def _expected_shapes(cls, n_components, n_features):
    shapes = {"components_": (n_components, n_features), "intercept_": (n_features,),
              "encoder_weights_": (n_components, n_features),
              "encoder_intercept_": (n_components,)}
    return {attr: shapes[attr] for attr, _ in cls._published_params.values()}


def _check_arrays(arrays, expected, source):
    """Shapes, float dtype and finiteness of ``arrays`` against ``expected`` {name: shape}."""
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{source}: expected the tensors {sorted(expected)}, got {sorted(arrays)} "
            f"(missing {missing}, unexpected {extra}); the file is of another architecture "
            "or was altered."
        )
    for name, shape in expected.items():
        value = arrays[name]
        if value.shape != tuple(shape):
            raise ValueError(
                f"{source}: tensor {name!r} has shape {value.shape}, but the config implies "
                f"{tuple(shape)}."
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{source}: tensor {name!r} holds NaN or infinite values.")


def _set_fitted(estimator, arrays, *, n_iter=0, n_steps=0, loss_curve=(), n_dead=None,
                feature_names=None, data_scale=1.0):
    """Make ``estimator`` fitted from its published arrays (already checked).

    The published attributes are the estimators' documented state; ``_data_scale`` (the RMS
    deviation the optimiser divides the data by) lets :meth:`partial_fit` continue training.
    """
    for name, value in arrays.items():
        setattr(estimator, name, np.ascontiguousarray(value))
    estimator.n_features_in_ = int(arrays["components_"].shape[1])
    if feature_names is not None:
        estimator.feature_names_in_ = np.asarray(feature_names, dtype=object)
    estimator.n_iter_ = int(n_iter)
    estimator.n_steps_ = int(n_steps)
    estimator.loss_curve_ = [float(v) for v in loss_curve]
    if n_dead is not None:
        estimator.n_dead_components_ = int(n_dead)
    estimator._data_scale = float(data_scale)
    return estimator


# -- skmpsae's own file ------------------------------------------------------------------------
def _versions():
    import sklearn
    import torch

    from . import __version__

    return {"skmpsae": __version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "torch": torch.__version__}


def _json_param(name, value, tensors):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if name == "dict_init":
        tensors["param.dict_init"] = np.ascontiguousarray(value)
        return "tensor:param.dict_init"
    if name == "device":
        return str(value)
    if name == "callback":
        warnings.warn(
            "the callback is a Python callable, which a safetensors file does not hold; it is "
            "saved as None.",
            UserWarning,
            stacklevel=3,
        )
        return None
    if name == "random_state":
        warnings.warn(
            "random_state is a RandomState instance, which a safetensors file cannot hold; it "
            "is saved as None (refitting the loaded model is then not reproducible). Use an "
            "integer seed to keep it.",
            UserWarning,
            stacklevel=3,
        )
        return None
    raise TypeError(f"cannot save the parameter {name}={value!r} of type {type(value).__name__}")


def _digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _write_safetensors(path, tensors, metadata=None):
    """Write a safetensors file atomically: a killed process leaves the previous file or none,
    never a truncated one."""
    from safetensors.numpy import save

    with atomic_write(path) as file:
        file.write(save(tensors, metadata=metadata))


def save(estimator, path):
    """Save a fitted SAE to a safetensors file that loads without executing code.

    Parameters
    ----------
    estimator : MatchingPursuitSAE, TopKSAE or ReLUSAE
        A fitted estimator.
    path : str or path-like
        The file to write, conventionally ending in ``.safetensors``; replaced if it exists.

    Returns
    -------
    path : pathlib.Path
        The file written.

    See Also
    --------
    load : Read the file back.
    to_saelens : Export for SAELens, SAE-Vis and Neuronpedia instead.

    Notes
    -----
    The parameters (``components_``, ``intercept_`` and, for TopK and ReLU,
    ``encoder_weights_`` and ``encoder_intercept_``) are stored in their dtype; the
    hyper-parameters (``get_params()``), the fitted counters, ``feature_names_in_`` and the
    versions of skmpsae, numpy, scikit-learn and torch as JSON in the header, with a SHA-256
    digest of each tensor. The Adam state is not saved: :meth:`partial_fit` after :func:`load`
    resumes with fresh moments (a pickle keeps them; a checkpoint of ``fit`` does too).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from skmpsae import TopKSAE
    >>> from skmpsae.io import load, save
    >>> X = np.random.RandomState(0).rand(100, 8).astype(np.float32)
    >>> sae = TopKSAE(n_components=16, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    >>> path = save(sae, os.path.join(tempfile.mkdtemp(), "sae.safetensors"))
    >>> bool(np.array_equal(load(path).transform(X), sae.transform(X)))
    True
    """
    _check_fitted_sae(estimator, "save")
    tensors = {name: np.ascontiguousarray(value)
               for name, value in _published_arrays(estimator).items()}
    params = {name: _json_param(name, value, tensors)
              for name, value in estimator.get_params(deep=False).items()}
    attributes = {
        "n_features_in_": int(estimator.n_features_in_),
        "n_iter_": int(getattr(estimator, "n_iter_", 0)),
        "n_steps_": int(getattr(estimator, "n_steps_", 0)),
        "loss_curve_": [float(v) for v in getattr(estimator, "loss_curve_", [])],
        "n_dead_components_": getattr(estimator, "n_dead_components_", None),
        "data_scale": float(getattr(estimator, "_data_scale", 1.0)),
    }
    if hasattr(estimator, "feature_names_in_"):
        attributes["feature_names_in_"] = [str(n) for n in estimator.feature_names_in_]
    header = {
        "format_version": _FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "params": params,
        "attributes": attributes,
        "versions": _versions(),
        "sha256": {name: _digest(value) for name, value in tensors.items()},
    }
    path = Path(path)
    _write_safetensors(path, tensors, {"format": _FORMAT, _FORMAT: json.dumps(header)})
    return path


def _read_safetensors(path, what):
    """All tensors of a safetensors file as numpy arrays, and its metadata; one-line errors."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        # framework="pt" reads bfloat16 too, which numpy has no dtype for.
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: not a readable safetensors file ({first}); it is truncated, corrupted "
            f"or not {what}."
        ) from None
    arrays = {}
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, not a float.")
        if tensor.dtype not in (_torch().float32, _torch().float64):
            tensor = tensor.float()  # float16 and bfloat16 widen exactly to float32
        arrays[name] = tensor.numpy()
    return arrays, meta


def _torch():
    import torch

    return torch


def load(path):
    """Load an SAE saved by :func:`save` (or by ``skmpsae fit -o MODEL.safetensors``).

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    Returns
    -------
    estimator : MatchingPursuitSAE, TopKSAE or ReLUSAE
        The fitted estimator, encoding exactly as the saved one.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated or altered (digest mismatch), is not an skmpsae file, or its
        tensors do not match its hyper-parameters; nothing is returned half-loaded.

    See Also
    --------
    save : Write the file.
    from_saelens, from_sparsify : Load SAEs saved by other libraries.
    """
    arrays, meta = _read_safetensors(path, "an skmpsae model")
    if meta.get("format") != _FORMAT or _FORMAT not in meta:
        raise ValueError(
            f"{path}: a safetensors file, but not an SAE saved by skmpsae.io.save (no skmpsae "
            "header); for SAELens or sparsify directories use from_saelens or from_sparsify."
        )
    try:
        header = json.loads(meta[_FORMAT])
        version = header["format_version"]
        name, params, attrs = header["estimator"], header["params"], header["attributes"]
        digests = header["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: the skmpsae header is damaged ({exc!r}).") from None
    if version != _FORMAT_VERSION:
        raise ValueError(
            f"{path}: file format version {version!r}; this skmpsae reads version "
            f"{_FORMAT_VERSION}. Upgrade skmpsae."
        )
    classes = _estimator_classes()
    if name not in classes:
        raise ValueError(f"{path}: unknown estimator {name!r}; expected one of {sorted(classes)}.")
    if set(digests) != set(arrays) or any(_digest(arrays[k]) != v for k, v in digests.items()):
        raise ValueError(f"{path}: the tensors do not match their SHA-256 digests; the file was "
                         "altered or corrupted.")
    if not isinstance(params, dict):
        raise ValueError(f"{path}: the skmpsae header is damaged (params is not a mapping).")
    params = dict(params)
    if params.get("dict_init") == "tensor:param.dict_init":
        params["dict_init"] = arrays.pop("param.dict_init")
    cls = classes[name]
    try:
        estimator = cls(**params)
        estimator._validate_params()
        n_features = int(attrs["n_features_in_"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: invalid hyper-parameters for {name} ({exc}).") from None
    _check_arrays(arrays, _expected_shapes(cls, estimator.n_components, n_features), path)
    dtypes = {value.dtype for value in arrays.values()}
    if len(dtypes) != 1:
        raise ValueError(f"{path}: the tensors mix dtypes {sorted(map(str, dtypes))}.")
    return _set_fitted(
        estimator, arrays, n_iter=attrs.get("n_iter_", 0), n_steps=attrs.get("n_steps_", 0),
        loss_curve=attrs.get("loss_curve_", ()), n_dead=attrs.get("n_dead_components_"),
        feature_names=attrs.get("feature_names_in_"), data_scale=attrs.get("data_scale", 1.0),
    )


# -- SAELens -----------------------------------------------------------------------------------
def _saelens_version():
    try:
        return _metadata.version("sae-lens")
    except _metadata.PackageNotFoundError:
        return _SAELENS_MIN_VERSION


def _mp_saelens_steps(estimator):
    """The number of steps an exported MP-SAE runs, or a ValueError saying what SAELens's
    matching pursuit cannot do."""
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
    return int(estimator.transform_n_nonzero_coefs or estimator.n_nonzero_coefs)


def to_saelens(estimator, directory, *, hook_name=None, model_name=None):
    """Export a fitted SAE to the directory layout ``sae_lens.SAE.load_from_disk`` reads.

    ``TopKSAE`` becomes SAELens's "topk" architecture, ``ReLUSAE`` "standard" and
    ``MatchingPursuitSAE`` "matching_pursuit" (a fixed number of steps: no residual threshold,
    no stop on a repeated atom). The SAELens model encodes and decodes as the estimator, up to
    float rounding (tested with sae-lens 6.54).

    Parameters
    ----------
    estimator : MatchingPursuitSAE, TopKSAE or ReLUSAE
        A fitted estimator. Its inference settings are exported:
        ``transform_n_nonzero_coefs`` if set, else ``n_nonzero_coefs``.
    directory : str or path-like
        Created if needed; ``cfg.json`` and ``sae_weights.safetensors`` in it are replaced.
    hook_name : str, default=None
        Where the SAE reads the model (e.g. ``"blocks.3.hook_resid_post"`` for
        TransformerLens, or the module name given to :func:`skmpsae.activations.capture`),
        stored in the config's metadata for tools that splice it in.
    model_name : str, default=None
        The model's name, stored in the metadata likewise.

    Returns
    -------
    directory : pathlib.Path

    Raises
    ------
    ValueError
        For settings SAELens would encode differently: a ``MatchingPursuitSAE`` with
        ``positive_code=False``, ``transform_algorithm="omp"`` or ``transform_tol`` set.

    See Also
    --------
    from_saelens : The reverse.
    save : skmpsae's own file, which keeps every hyper-parameter.
    """
    _check_fitted_sae(estimator, "to_saelens")
    name = type(estimator).__name__
    W_dec = estimator.components_
    cfg = {"d_in": int(W_dec.shape[1]), "d_sae": int(W_dec.shape[0]),
           "dtype": str(W_dec.dtype), "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none"}
    tensors = {"W_dec": W_dec, "b_dec": estimator.intercept_}
    if name == "MatchingPursuitSAE":
        steps = _mp_saelens_steps(estimator)
        cfg.update(architecture="matching_pursuit", residual_threshold=0.0,
                   max_iterations=steps, stop_on_duplicate_support=False)
    else:
        tensors.update(W_enc=estimator.encoder_weights_.T, b_enc=estimator.encoder_intercept_)
        if name == "TopKSAE":
            k = min(estimator.transform_n_nonzero_coefs or estimator.n_nonzero_coefs,
                    estimator.n_components)
            cfg.update(architecture="topk", k=int(k), rescale_acts_by_decoder_norm=False)
        else:
            cfg.update(architecture="standard")
    cfg["metadata"] = {
        "sae_lens_version": _saelens_version(),
        "sae_lens_training_version": None,
        "hook_name": hook_name,
        "model_name": model_name,
        "skmpsae_version": _versions()["skmpsae"],
        "skmpsae_estimator": name,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_safetensors(directory / _SAELENS_WEIGHTS,
                       {k: np.ascontiguousarray(v) for k, v in tensors.items()})
    with atomic_write(directory / _CFG) as file:
        file.write(json.dumps(cfg, indent=2).encode())
    return directory


def _read_cfg(directory, weights, library):
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    cfg_path = directory / _CFG
    if not cfg_path.is_file() or not (directory / weights).is_file():
        children = sorted(p.name for p in directory.iterdir() if (p / _CFG).is_file())
        hint = f"; it holds SAEs in the sub-directories {children}" if children else ""
        raise ValueError(
            f"{directory}: not a {library} SAE directory (expected {_CFG} and {weights}){hint}."
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc}).") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}.")
    return directory, cfg


def _positive_int_field(cfg, key, source):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}.")
    return value


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
            raise ValueError(f"{source}: activation function {activation!r} has no skmpsae "
                             "estimator.")
    if architecture not in ("standard", "topk", "matching_pursuit"):
        raise ValueError(
            f"{source}: SAELens architecture {architecture!r} has no skmpsae estimator "
            "(supported: 'standard' -> ReLUSAE, 'topk' -> TopKSAE, 'matching_pursuit' -> "
            "MatchingPursuitSAE)."
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
    estimator : ReLUSAE, TopKSAE or MatchingPursuitSAE
        For the "standard", "topk" and "matching_pursuit" architectures; ``transform``
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
    the TopK and ReLU encoders absorb this into ``encoder_intercept_``
    (``b_enc + b_dec @ W_enc``), and a matching-pursuit SAE gets a zero ``intercept_``.
    """
    from . import MatchingPursuitSAE, ReLUSAE, TopKSAE

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
        estimator = MatchingPursuitSAE(n_components=d_sae, n_nonzero_coefs=int(steps),
                                       fit_intercept=subtract_b_dec)
        arrays = {"components_": weights["W_dec"], "intercept_": weights["b_dec"]}
        if not subtract_b_dec:
            arrays["intercept_"] = np.zeros_like(weights["b_dec"])
        return _set_fitted(estimator, _same_dtype(arrays))
    if cfg.get("rescale_acts_by_decoder_norm", False):
        raise ValueError(
            f"{source}: rescale_acts_by_decoder_norm=true ranks latents by pre-activation times "
            "decoder norm; skmpsae's TopK ranks raw pre-activations."
        )
    shapes.update(W_enc=(d_in, d_sae), b_enc=(d_sae,))
    _check_arrays(weights, shapes, directory / _SAELENS_WEIGHTS)
    b_enc = weights["b_enc"]
    if not subtract_b_dec:
        b_enc = b_enc + weights["b_dec"] @ weights["W_enc"]
    if architecture == "topk":
        estimator = TopKSAE(n_components=d_sae,
                            n_nonzero_coefs=_positive_int_field(cfg, "k", source))
    else:
        estimator = ReLUSAE(n_components=d_sae)
    arrays = {"components_": weights["W_dec"], "intercept_": weights["b_dec"],
              "encoder_weights_": weights["W_enc"].T, "encoder_intercept_": b_enc}
    return _set_fitted(estimator, _same_dtype(arrays))


def _same_dtype(arrays):
    dtype = np.result_type(*arrays.values())
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in arrays.items()}


# -- sparsify ----------------------------------------------------------------------------------
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
    from . import TopKSAE

    directory, cfg = _read_cfg(directory, _SPARSIFY_WEIGHTS, "sparsify")
    source = directory / _CFG
    d_in = _positive_int_field(cfg, "d_in", source)
    k = _positive_int_field(cfg, "k", source)
    for key, why in (("transcode", "a transcoder predicts another module's output"),
                     ("skip_connection", "its linear skip connection has no skmpsae equivalent")):
        if cfg.get(key, False):
            raise ValueError(f"{source}: {key}=true: {why}; only plain SAEs load.")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"{source}: activation {cfg['activation']!r}; only 'topk' loads.")
    n_latents = cfg.get("num_latents") or d_in * _positive_int_field(
        cfg, "expansion_factor", source)
    weights, _ = _read_safetensors(directory / _SPARSIFY_WEIGHTS, "sparsify weights")
    shapes = {"encoder.weight": (n_latents, d_in), "encoder.bias": (n_latents,),
              "W_dec": (n_latents, d_in), "b_dec": (d_in,)}
    _check_arrays(weights, shapes, directory / _SPARSIFY_WEIGHTS)
    arrays = {"components_": weights["W_dec"], "intercept_": weights["b_dec"],
              "encoder_weights_": weights["encoder.weight"],
              "encoder_intercept_": weights["encoder.bias"]}
    estimator = TopKSAE(n_components=int(n_latents), n_nonzero_coefs=k)
    return _set_fitted(estimator, _same_dtype(arrays))
