"""What a streamed training run will see, known before it starts: the rows (tokens) one pass
over the corpus gives, the corpus's digest, and the optimiser steps each SAE will take, so
that its learning rate follows the schedule of a ``fit`` of that many steps (warm-up, then
the decay to zero at the end) rather than the open-ended one of ``partial_fit``.

Counting tokenises the corpus once, without the model: a small cost next to the forward
passes that follow.
"""

import hashlib
import warnings
from typing import NamedTuple

import numpy as np

from .corpus import _windows

# Fewer optimiser steps than this are warned about: the warm-up alone takes up to 100.
_FEW_STEPS = 50


class _Plan(NamedTuple):
    rows_per_pass: int | None  # None: the corpus holds more than the run uses (not counted)
    total: int  # rows each SAE is trained on
    passes: int  # passes over the corpus that started
    corpus_sha256: str | None  # of the documents (None when not counted whole)


class _HashingCorpus:
    """A corpus whose documents, as read, feed a SHA-256 digest."""

    def __init__(self, corpus):
        self.corpus, self.digest = corpus, hashlib.sha256()

    def documents(self, start=0):
        for text in self.corpus.documents(start):
            self.digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
            yield text


def count_rows(stream, limit=None):
    """Rows one pass of ``stream`` (an ``_ActivationStream``) gives, its special tokens left
    out or kept as the stream does, summed over the ranks of a process group; counting stops
    past ``limit``. Returns ``(rows, complete, digest)``: whether the whole corpus was
    counted, and the digest of its documents (None when not counted whole, or when each
    rank read its own share)."""
    corpus = _HashingCorpus(stream.corpus)
    windows = _windows(
        corpus, stream.framing, stream.context_size, (0, 0), stream.rank, stream.world_size
    )
    special = stream.framing.special if stream.skip_special_tokens else np.array([], int)
    rows, stopped = 0, False
    for ids, _ in windows:
        rows += len(ids) - int(np.isin(ids, special).sum()) if special.size else len(ids)
        if limit is not None and rows > limit:
            stopped = True
            break
    windows.close()
    rows = _sum_over_ranks(rows)
    complete = not _sum_over_ranks(int(stopped))
    digest = corpus.digest.hexdigest() if complete and stream.world_size == 1 else None
    return rows, complete, digest


def _sum_over_ranks(value):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return sum(values)


def plan_run(stream, tokens, max_iter):
    """The :class:`_Plan` of training on ``stream`` for ``max_iter`` passes, at most
    ``tokens`` rows (None: no cap)."""
    rows, complete, digest = count_rows(stream, tokens)
    if rows == 0:
        raise ValueError(
            f"the corpus gives no full window of context_size={stream.context_size} tokens: "
            "nothing to train on."
        )
    if not complete:  # the first pass alone holds more than the cap
        return _Plan(None, tokens, 1, None)
    total = rows * max_iter if tokens is None else min(tokens, rows * max_iter)
    passes = -(-total // rows) if rows else 0
    return _Plan(rows, total, passes, digest)


def planned_steps(plan, chunk_size, batch_size, world_size=1):
    """The optimiser steps of an SAE trained on ``plan``'s chunks with batches of
    ``batch_size`` rows: every chunk is ``chunk_size`` rows but the last of each pass
    (``partial_fit`` steps once per batch of a chunk, a last batch under half a batch joining
    the one before). Under a process
    group a chunk gathers every rank's, and each rank's pass may end on a short chunk: the
    count then errs on the high side, so that the rate never reaches zero early."""
    from .._train.tensors import _n_batches

    chunk = chunk_size * world_size
    per_pass = plan.rows_per_pass if plan.rows_per_pass is not None else plan.total
    steps, left = 0, plan.total
    while left > 0:
        in_pass = min(per_pass, left)
        full, rest = divmod(in_pass, chunk)
        steps += full * _n_batches(chunk, batch_size) + _n_batches(rest, batch_size)
        steps += (world_size - 1) * _n_batches(chunk_size, batch_size)
        left -= in_pass
    return max(steps, 1)


def warn_if_too_little(plan, tokens, steps, chunk_size, batch_size, name):
    """Warn, with the numbers, when the corpus gives fewer rows than ``tokens`` asks for, or
    when the run is too short for the SAE to learn (fewer than ``_FEW_STEPS`` steps)."""
    if tokens is not None and plan.total < tokens:
        warnings.warn(
            f"the corpus gives {plan.total} tokens"
            + (f" in {plan.passes} passes" if plan.passes > 1 else "")
            + f", fewer than tokens={tokens}: trained on all of them.",
            UserWarning,
            stacklevel=4,
        )
    if steps < _FEW_STEPS:
        warnings.warn(
            f"{name}: {plan.total} tokens in chunks of chunk_size={chunk_size} rows and "
            f"batches of batch_size={batch_size} rows make "
            f"{steps} optimiser step{'s' if steps != 1 else ''}, too few to learn much "
            "(the learning-rate warm-up alone is up to 100); give more tokens (tokens), "
            "passes (max_iter) or a smaller batch (batch_size).",
            UserWarning,
            stacklevel=4,
        )
