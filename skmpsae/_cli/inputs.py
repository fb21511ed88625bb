"""The command line's inputs: ``.npy`` row files and model files (skmpsae's, SAELens's,
sparsify's) read with one-line errors, and the warnings when rows come from another place, or
another special-token choice, than the model was trained on."""

from pathlib import Path

import numpy as np

from .common import CommandError


def _sniff(path):
    """What the first bytes of ``path`` say it is: "npy", "safetensors", "zip", "pickle",
    "text" or "binary"."""
    with open(path, "rb") as file:
        head = file.read(4096)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 4 KiB boundary
            return "binary"
    return "binary" if b"\0" in head else "text"


def _not_a_file(path, what):
    path = Path(path)
    if path.is_dir():
        return CommandError(f"{path}: a directory, not {what}")
    return CommandError(f"{path}: no such file")


def _load_npy(path):
    """A 2-D numeric array from ``path``, memory-mapped (read-only)."""
    path = Path(path)
    if not path.is_file():
        raise _not_a_file(path, "a .npy file")
    kind = _sniff(path)
    if kind == "text":
        raise CommandError(
            f"{path}: a text file, not a .npy array; to use texts, capture their activations "
            f"first: skmpsae capture MODEL --hookpoint NAME --texts {path} -o ACTS.npy"
        )
    if kind in ("safetensors", "pickle"):
        raise CommandError(
            f"{path}: a model file, not a .npy array of activations; check the order of the "
            "arguments (see --help)"
        )
    if kind == "zip" and path.suffix != ".npz":
        raise CommandError(f"{path}: a zip archive (a torch .pt file?), not a .npy array")
    if kind not in ("npy", "zip"):
        raise CommandError(f"{path}: not a .npy array (save one with numpy.save)")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):
            raise CommandError(
                f"{path}: a .npy file of Python objects, not of numbers; save a numeric array"
            ) from None
        raise CommandError(f"{path}: not a readable .npy array ({exc})") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read ({exc})") from None
    if not isinstance(X, np.ndarray):
        X.close()
        raise CommandError(f"{path}: expected a .npy file holding one array, got a .npz archive")
    if X.ndim != 2:
        raise CommandError(
            f"{path}: expected a 2-D array (n_samples, n_features), got shape {X.shape}; "
            "reshape it, e.g. X.reshape(-1, X.shape[-1]) for (batch, tokens, features) dumps"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CommandError(f"{path}: the array is empty (shape {X.shape})")
    if X.dtype.kind not in "biuf":
        raise CommandError(f"{path}: expected real numbers, got dtype {X.dtype}")
    return X


def _load_model(path):
    """A fitted SAE from a file written by ``skmpsae fit`` or a SAELens / sparsify directory."""
    from .._io.saelens import from_saelens
    from .._io.sparsify import from_sparsify

    path = Path(path)
    if path.is_dir():
        if (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file():
            return from_saelens(path)
        if (path / "cfg.json").is_file() and (path / "sae.safetensors").is_file():
            return from_sparsify(path)
        raise CommandError(
            f"{path}: a directory, but not a SAELens or sparsify SAE (no cfg.json with "
            "sae_weights.safetensors or sae.safetensors); expected a model file"
        )
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    kind = _sniff(path)
    if kind == "npy" or (kind == "zip" and path.suffix == ".npz"):
        raise CommandError(
            f"{path}: a numpy array, not a model; check the order of the arguments (MODEL "
            "comes first, see --help)"
        )
    if kind == "text":
        raise CommandError(f"{path}: a text file, not a model saved by 'skmpsae fit'")
    if kind == "safetensors":
        from ..io import load

        return load(path)
    if kind != "pickle" and path.suffix != ".joblib":
        raise CommandError(
            f"{path}: not a model saved by 'skmpsae fit' (a .safetensors or .joblib file)"
        )
    return _load_pickle(path)


def _load_pickle(path):
    import joblib

    from .._models.base import _BaseSAE

    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling fails with many exception types
        raise CommandError(
            f"{path}: not a model saved by 'skmpsae fit' ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model, _BaseSAE) or not hasattr(model, "components_"):
        raise CommandError(f"{path}: not a fitted skmpsae model (got {type(model).__name__})")
    return model


def _model_and_rows(args, command):
    """The model of ``args.model`` (on ``--device`` if given) and the rows of ``args.data``,
    checked to have the model's width and warned about if captured elsewhere."""
    model = _load_model(args.model)
    if args.device is not None:
        model.set_params(device=args.device)
    X = _load_npy(args.data)
    if X.shape[1] != model.n_features_in_:
        raise CommandError(
            f"{args.data}: has {X.shape[1]} features, but the model was fitted on "
            f"{model.n_features_in_}"
        )
    _check_rows_match(model, args.data, command)
    return model, X


def _check_rows_match(model, data, command):
    """Warn when ``data``'s capture sidecar names another place than the model was fitted at."""
    from .._activations.metadata import check_same_place, provenance_of, read_capture_metadata

    try:
        rows = read_capture_metadata(data)
    except ValueError:
        return
    if rows:
        check_same_place(
            provenance_of(model),
            what=f"{data} comes from another place than the model",
            hookpoint=rows.get("hookpoint"),
            model=rows.get("model_id"),
            capture_input=rows.get("capture_input"),
        )
        _check_special_tokens(provenance_of(model), rows, data)


def _check_special_tokens(provenance, rows, data):
    """Warn when the model was trained on rows with the special tokens left out and ``data``
    keeps them, or the other way round: such rows (a [CLS], a GPT's first position) are
    unlike the others, and the scores of the one set say little of the other."""
    import warnings

    trained, given = provenance.get("skip_special_tokens"), rows.get("skip_special_tokens")
    if trained is None or given is None or bool(trained) == bool(given):
        return
    how = {True: "without special tokens", False: "with special tokens ([CLS], BOS...)"}
    warnings.warn(
        f"{data}: rows captured {how[bool(given)]}, but the model was trained on rows "
        f"{how[bool(trained)]}; capture again "
        f"{'with' if trained is False else 'without'} --keep-special-tokens to compare like "
        "with like.",
        UserWarning,
        stacklevel=3,
    )
