"""Helpers shared by :mod:`skmpsae.io` and the SAELens and sparsify layouts: reading and
writing safetensors files, checking tensors, and making an estimator fitted from its arrays."""

from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_write
from .._models.registry import estimator_specs


def _estimator_classes():
    return {spec.estimator.__name__: spec.estimator for spec in estimator_specs().values()}


def _check_fitted_sae(estimator, what):
    from sklearn.utils.validation import check_is_fitted

    from .._models.base import _BaseSAE

    if not isinstance(estimator, _BaseSAE):
        raise TypeError(
            f"{what} takes a fitted skmpsae estimator ({', '.join(_estimator_classes())}), "
            f"got {type(estimator).__name__}."
        )
    check_is_fitted(estimator)


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


def _versions():
    import sklearn

    from .._version import __version__

    return {
        "skmpsae": __version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
    }


def _write_safetensors(path, tensors, metadata=None):
    """Write a safetensors file atomically: a killed process leaves the previous file or none,
    never a truncated one."""
    from safetensors.numpy import save

    with atomic_write(path) as file:
        file.write(save(tensors, metadata=metadata))


def _read_safetensors(path, what):
    """All tensors of a safetensors file as numpy arrays, and its metadata; one-line errors."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(_directory_hint(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as file:
        head = file.read(9)
    # A safetensors file starts with its header's length (8 bytes, little-endian), then "{".
    if head[8:9] != b"{" and head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05":
        raise ValueError(
            f"{path}: a pickle (e.g. a .joblib model), not a safetensors file; load it with "
            "joblib.load, only if you trust where it came from."
        )
    if head[8:9] != b"{" and head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path}: a .npy array, not a safetensors file.")
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
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # float16 and bfloat16 widen exactly to float32
        arrays[name] = tensor.numpy()
    return arrays, meta


def _directory_hint(path):
    """What to say of a directory given where a model file was expected."""
    if (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file():
        return f"{path}: a directory in SAELens's layout, not a file; read it with from_saelens."
    if (path / "cfg.json").is_file() and (path / "sae.safetensors").is_file():
        return f"{path}: a directory in sparsify's layout, not a file; read it with from_sparsify."
    return f"{path}: a directory, not a model file."


def _same_dtype(arrays):
    dtype = np.result_type(*arrays.values())
    return {k: np.array(v, dtype=dtype, order="C") for k, v in arrays.items()}
