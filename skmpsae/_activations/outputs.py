"""What streamed training writes: each SAE with the record of its training data, saved so
that a failed save (a full disk) loses no model."""

import os
import tempfile
from pathlib import Path


def stream_provenance(stream, name, hookpoint, plan, tokens_done, *, batch_size):
    """What a streamed SAE records of its training data, as a capture's sidecar records it
    for ``fit`` (see :func:`~skmpsae.activations.read_capture_metadata`): the model, the
    hookpoint, the corpus and its digest, the windows and the special-token choice, and the
    tokens and passes it was trained on."""
    from .metadata import model_id, model_source

    model = stream.forward.model
    special = [int(i) for i in stream.framing.special]
    fingerprint = model_id(model)
    if name is None:  # a module passed in: the directory it was loaded from, if it is one
        path = fingerprint.partition(":")[2]
        name = path if path and Path(path).is_dir() else None
    return {
        "model": None if name is None else model_source(name),
        "model_id": fingerprint,
        "hookpoint": hookpoint,
        "capture_input": False,
        "corpus": repr(stream.corpus),
        "corpus_sha256": plan.corpus_sha256,
        "context_size": stream.context_size,
        "batch_size": batch_size,
        "skip_special_tokens": bool(stream.skip_special_tokens),
        "special_token_ids": special,
        "streamed": True,
        "tokens_seen": int(tokens_done),
        "passes": int(plan.passes),
        "tokens_per_pass": plan.rows_per_pass,
    }


def save_models(estimators, output_dir, saelens, save, to_saelens):
    """Write ``OUTPUT_DIR/HOOKPOINT.safetensors`` with ``save`` (and the SAELens export with
    ``to_saelens``: the public :mod:`skmpsae.io` functions) for each SAE. A save that fails
    writes the model to the temporary directory instead, and the OSError raised names both
    paths."""
    for hookpoint, fitted in estimators.items():
        path = Path(output_dir) / f"{hookpoint}.safetensors"
        try:
            save(fitted, path)
            if saelens:
                to_saelens(fitted, Path(output_dir) / f"{hookpoint}.saelens", hook_name=hookpoint)
        except OSError as exc:
            rescue = Path(tempfile.gettempdir()) / f"skmpsae-rescued-{os.getpid()}-{path.name}"
            save(fitted, rescue)
            raise OSError(
                f"{path}: could not save the model ({exc.strerror or exc}); it is saved to "
                f"{rescue} instead: move it where you want it",
            ) from None
