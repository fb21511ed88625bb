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
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from ._compat import check_parameters
from ._io.saelens import from_saelens, to_saelens
from ._io.safetensors import (
    _check_arrays,
    _check_fitted_sae,
    _estimator_classes,
    _read_safetensors,
    _versions,
    _write_safetensors,
)
from ._io.sparsify import from_sparsify
from ._models.fitted import published_arrays, published_shapes

__all__ = ["from_saelens", "from_sparsify", "load", "save", "to_saelens"]

_FORMAT = "skmpsae"
_FORMAT_VERSION = 1


# Fitted attributes that save writes and load restores by name; any other public attribute
# ending in "_" that is not a published array (prefix_sizes_, validation_scores_, ...) is
# saved generically by _json_attribute.
_COUNTERS = (
    "n_features_in_",
    "n_iter_",
    "n_steps_",
    "loss_curve_",
    "n_dead_components_",
    "feature_names_in_",
)


def _json_attribute(name, value):
    """A fitted attribute or a sequence parameter as JSON; tuples, numeric arrays and
    mappings with string keys are tagged so that they load as they were."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (Integral, np.bool_)):
        return bool(value) if isinstance(value, np.bool_) else int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        items = [_json_attribute(name, v) for v in value]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"mapping": {key: _json_attribute(name, v) for key, v in value.items()}}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {"array": value.tolist(), "dtype": value.dtype.str}
    raise TypeError(f"cannot save {name}={value!r} of type {type(value).__name__}")


def _from_json_attribute(value):
    if isinstance(value, dict):
        if set(value) == {"tuple"} and isinstance(value["tuple"], list):
            return tuple(_from_json_attribute(v) for v in value["tuple"])
        if set(value) == {"mapping"} and isinstance(value["mapping"], dict):
            return {key: _from_json_attribute(v) for key, v in value["mapping"].items()}
        if set(value) == {"array", "dtype"} and np.dtype(value["dtype"]).kind in "biuf":
            return np.array(value["array"], dtype=np.dtype(value["dtype"]))
        raise ValueError(f"unexpected mapping {value!r}")
    if isinstance(value, list):
        return [_from_json_attribute(v) for v in value]
    return value


def _fitted_attributes(estimator):
    published = set(published_arrays(estimator))
    return {
        name: _json_attribute(name, value)
        for name, value in sorted(vars(estimator).items())
        if name.endswith("_")
        and not name.startswith("_")
        and name not in published
        and name not in _COUNTERS
        and name != "provenance_"
    }


def _restore_fitted_attributes(fitted):
    if not isinstance(fitted, dict) or not all(
        isinstance(k, str) and k.isidentifier() and k.endswith("_") and not k.startswith("_")
        for k in fitted
    ):
        raise ValueError(f"fitted attributes {fitted!r} are not a mapping of public names")
    return {name: _from_json_attribute(value) for name, value in fitted.items()}


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
    if isinstance(value, (list, tuple, np.ndarray)):  # e.g. MatryoshkaSAE's prefix_sizes
        return _json_attribute(name, value)
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


def save(estimator, path, *, provenance=None):
    """Save a fitted SAE to a safetensors file that loads without executing code.

    Parameters
    ----------
    estimator : MatchingPursuitSAE, TopKSAE, ReLUSAE, BatchTopKSAE, MatryoshkaSAE or JumpReLUSAE
        A fitted estimator.
    path : str or path-like
        The file to write, conventionally ending in ``.safetensors``; replaced if it exists.
    provenance : dict, str or path-like, default=None
        Where the training rows came from: the settings of their capture (a dict, or the
        path of the ``.npy`` file :func:`skmpsae.activations.capture` wrote, whose
        ``.meta.json`` is read). :func:`load` gives them back as the estimator's
        ``provenance_``, which :func:`to_saelens`, :func:`skmpsae.activations.splice` and
        the spliced metrics use as defaults. None: the estimator's own ``provenance_``, if
        any.

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
    The published arrays (``components_``, ``intercept_`` and, for the estimators with an
    encoder, ``encoder_weights_``, ``encoder_intercept_`` and the ``threshold_`` of BatchTopK,
    Matryoshka and JumpReLU) are stored in their dtype; the hyper-parameters
    (``get_params()``), the fitted counters, the other fitted attributes (``prefix_sizes_``,
    ``validation_scores_``, ``best_validation_score_``), ``feature_names_in_`` and the
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
    # np.array, not np.ascontiguousarray, which turns BatchTopK's scalar threshold_ into 1-d.
    tensors = {
        name: np.array(value, order="C") for name, value in published_arrays(estimator).items()
    }
    params = {
        name: _json_param(name, value, tensors)
        for name, value in estimator.get_params(deep=False).items()
    }
    attributes = {
        "n_features_in_": int(estimator.n_features_in_),
        "n_iter_": int(getattr(estimator, "n_iter_", 0)),
        "n_steps_": int(getattr(estimator, "n_steps_", 0)),
        "loss_curve_": [float(v) for v in getattr(estimator, "loss_curve_", [])],
        "n_dead_components_": getattr(estimator, "n_dead_components_", None),
        "data_scale": float(getattr(estimator, "_data_scale", 1.0)),
        "fitted": _fitted_attributes(estimator),
    }
    if hasattr(estimator, "feature_names_in_"):
        attributes["feature_names_in_"] = [str(n) for n in estimator.feature_names_in_]
    header = {
        "format_version": _FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "params": params,
        "attributes": attributes,
        "provenance": _provenance(estimator, provenance),
        "versions": _versions(),
        "sha256": {name: _digest(value) for name, value in tensors.items()},
    }
    path = Path(path)
    _write_safetensors(path, tensors, {"format": _FORMAT, _FORMAT: json.dumps(header)})
    return path


def _provenance(estimator, provenance):
    if provenance is None:
        provenance = getattr(estimator, "provenance_", None)
    elif not isinstance(provenance, dict):
        from ._activations.metadata import metadata_path, read_capture_metadata

        source = provenance
        provenance = read_capture_metadata(source)
        if provenance is None:
            raise ValueError(
                f"provenance: {source} has no capture metadata ({metadata_path(source)})."
            )
    if provenance is None:
        return None
    try:
        return json.loads(json.dumps(provenance))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"provenance must be a JSON-serialisable dict ({exc}).") from None


def load(path):
    """Load an SAE saved by :func:`save` (or by ``skmpsae fit -o MODEL.safetensors``).

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    Returns
    -------
    estimator : MatchingPursuitSAE, TopKSAE, ReLUSAE, BatchTopKSAE, MatryoshkaSAE or JumpReLUSAE
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
        raise ValueError(
            f"{path}: the tensors do not match their SHA-256 digests; the file was "
            "altered or corrupted."
        )
    if not isinstance(params, dict):
        raise ValueError(f"{path}: the skmpsae header is damaged (params is not a mapping).")
    try:
        params = {key: _from_json_attribute(value) for key, value in params.items()}
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: the skmpsae header is damaged ({exc}).") from None
    if params.get("dict_init") == "tensor:param.dict_init":
        params["dict_init"] = arrays.pop("param.dict_init")
    cls = classes[name]
    try:
        estimator = cls(**params)
        check_parameters(estimator)
        n_features = int(attrs["n_features_in_"])
        expected = published_shapes(estimator, n_features)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: invalid hyper-parameters for {name} ({exc}).") from None
    try:
        fitted = _restore_fitted_attributes(attrs.get("fitted", {}))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: the skmpsae header is damaged ({exc}).") from None
    _check_arrays(arrays, expected, path)
    dtypes = {value.dtype for value in arrays.values()}
    if len(dtypes) != 1:
        raise ValueError(f"{path}: the tensors mix dtypes {sorted(map(str, dtypes))}.")
    provenance = header.get("provenance")
    if provenance is not None:
        if not isinstance(provenance, dict):
            raise ValueError(
                f"{path}: the skmpsae header is damaged (provenance is not a mapping)."
            )
        fitted = {**fitted, "provenance_": provenance}
    return estimator._set_fitted_state(
        arrays,
        n_iter=attrs.get("n_iter_", 0),
        n_steps=attrs.get("n_steps_", 0),
        loss_curve=attrs.get("loss_curve_", ()),
        n_dead=attrs.get("n_dead_components_"),
        feature_names_in_=attrs.get("feature_names_in_"),
        data_scale=attrs.get("data_scale", 1.0),
        fitted=fitted,
    )
