""":func:`skmpsae.activations.capture` over a :class:`Corpus`: the token windows that
:func:`skmpsae.activations.stream` reads, through the same code, written in corpus order to
the resumable ``.npy`` file of ``capture_file``, with the rows' provenance beside it (the
window's index in the capture as the text index: see ``provenance``)."""

from pathlib import Path

import numpy as np

from .capture_file import _resume_state, _RowFile, _save_state
from .metadata import metadata_path, model_id, write_capture_metadata
from .models import _model_id
from .provenance import _ProvenanceWriter
from .stream import _ActivationStream


def _capture_windows(
    model,
    tokenizer,
    corpus,
    hookpoint,
    output,
    *,
    context_size,
    batch_size,
    skip_special_tokens,
    overwrite,
    verbose,
    source,
):
    stream = _ActivationStream(
        model,
        tokenizer,
        corpus,
        [hookpoint],
        context_size=context_size,
        batch_size=batch_size,
        buffer_size=0,
        chunk_size=1,
        skip_special_tokens=skip_special_tokens,
        seed=0,
    )
    if len(stream.hookpoints) != 1:
        raise ValueError(
            f"hookpoint {hookpoint!r} names {len(stream.hookpoints)} modules; capture takes one."
        )
    (name,) = stream.hookpoints
    first = next(stream._batches(), None)
    if first is None:
        raise ValueError(f"the corpus gives no full window of context_size={context_size} tokens.")
    n_features = first[0][name].shape[1]
    settings = {
        "hookpoint": name,
        "model": _model_id(model),
        "corpus": repr(corpus),
        "context_size": context_size,
        "batch_size": batch_size,
        "skip_special_tokens": bool(skip_special_tokens),
        "n_features": n_features,
    }
    # The state's "texts_done" counts windows: the text index of the next window's rows.
    state_path, windows, rows = _resume_state(output, settings, overwrite)
    metadata_path(output).unlink(missing_ok=True)  # written again when this capture ends
    if rows:
        import json

        stream.position = tuple(json.loads(state_path.read_text())["position"])
    from .._train.progress import Progress

    progress = Progress(None, "capture", "batch", bool(verbose))
    out = _RowFile(output, n_features, rows)
    special = stream.framing.special.tolist()
    tokens = _ProvenanceWriter(output, rows, special)  # OUTPUT.tokens.npy, row for row
    try:
        for batch_rows, position, ids, keep in stream._token_batches():
            out.append(batch_rows[name])
            tokens.append(windows, keep, ids)
            tokens.commit()
            out.commit()
            stream.position = position
            windows += ids.shape[0]
            _save_state(state_path, {**settings, "position": list(position)}, windows, out.n_rows)
            progress.update(f"{out.n_rows} rows")
    finally:
        out.close()
        tokens.close()
        progress.close()
    meta = {**settings, "capture_input": False, "model": source, "model_id": model_id(model)}
    special = [int(i) for i in stream.framing.special]
    write_capture_metadata(output, meta, out.n_rows, special_token_ids=special)
    tokens.write_vocab(stream.framing.tokenizer)
    state_path.unlink(missing_ok=True)
    return np.load(Path(output), mmap_mode="r")
