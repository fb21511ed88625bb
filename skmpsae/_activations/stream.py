"""Activations streamed from a model: every hookpoint from one forward pass over token windows,
rows mixed in a shuffle buffer, the model running ahead in a thread while the SAEs train.

The stream's state (the corpus position after the last window read into the buffer, the
buffer's rows and its random generator) is exactly what a resumed stream needs to yield the
same chunks as one never interrupted; windows the reader thread computed ahead are simply
computed again.
"""

import difflib
import fnmatch
import itertools
import queue
import threading

import numpy as np
import torch

from .corpus import _Framing, _windows
from .hooks import _device_of, _hidden_tensor, _is_sentence_transformer, _TokenBatcher


class _StopForward(Exception):
    """Raised by the last hook: nothing after the hooked modules is needed."""


def _resolve_hookpoints(model, hookpoints):
    """Module names for ``hookpoints``: names or patterns, a list or one comma-separated
    string; in the order given, each once. A pattern matches name by name component
    (``fnmatch`` on each): ``encoder.layer.*.output`` is every layer's ``output``, not
    ``encoder.layer.0.attention.output``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(hookpoints, str):
        hookpoints = [h.strip() for h in hookpoints.split(",") if h.strip()]
    if not hookpoints or not all(isinstance(h, str) for h in hookpoints):
        raise ValueError("hookpoints must be one or more module names or patterns.")
    names = [name for name, _ in model.named_modules() if name]
    found = []
    for pattern in hookpoints:
        matched = [pattern] if pattern in names else [n for n in names if _matches(n, pattern)]
        if not matched:
            close = difflib.get_close_matches(pattern, names, n=4, cutoff=0.3) or names[:4]
            raise ValueError(
                f"hookpoint {pattern!r} matches no module of this {type(model).__name__} "
                f"(e.g. {', '.join(close)}; see model.named_modules())."
            )
        found += [name for name in matched if name not in found]
    return found


def _matches(name, pattern):
    parts, wanted = name.split("."), pattern.split(".")
    return len(parts) == len(wanted) and all(map(fnmatch.fnmatchcase, parts, wanted))


def _model_limit(model, tokenizer):
    """The longest sequence the model takes (None when nothing says)."""
    return _TokenBatcher(model, tokenizer, None, False).max_length


class _MultiHook:
    """One forward pass over a batch of windows, keeping the output of every hooked module
    and stopping as soon as the last of them has run."""

    def __init__(self, model, tokenizer, hookpoints):
        self.model, self.hookpoints = model, list(hookpoints)
        modules = dict(model.named_modules())
        self.modules = [modules[h] for h in self.hookpoints]
        self.sentence_transformer = _is_sentence_transformer(model)
        names = getattr(tokenizer, "model_input_names", ())
        self.token_types = "token_type_ids" in names

    def __call__(self, ids):
        seen = {}

        def hook_for(name):
            def hook(module, args, output):
                if name not in seen:
                    seen[name] = _hidden_tensor(output, ids.shape, name).detach()
                    if len(seen) == len(self.hookpoints):
                        raise _StopForward

            return hook

        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.token_types:
            inputs["token_type_ids"] = torch.zeros_like(ids)
        device = _device_of(self.model)
        inputs = {key: value.to(device) for key, value in inputs.items()}
        handles = [
            m.register_forward_hook(hook_for(h))
            for h, m in zip(self.hookpoints, self.modules, strict=True)
        ]
        try:
            with torch.inference_mode():
                if self.sentence_transformer:
                    self.model(dict(inputs))
                else:
                    self.model(**inputs)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [h for h in self.hookpoints if h not in seen]
        if missing:
            raise ValueError(f"hookpoint {missing[0]!r} was not called in the forward pass.")
        return {h: seen[h].to("cpu", torch.float32) for h in self.hookpoints}


_END = object()


class _ActivationStream:
    """Chunks of ``chunk_size`` rows per hookpoint (dicts of float32 arrays, the same tokens
    in the same order for every hookpoint), drawn at random from a buffer of at least
    ``buffer_size`` rows (``buffer_size=0``: in corpus order)."""

    def __init__(
        self,
        model,
        tokenizer,
        corpus,
        hookpoints,
        *,
        context_size,
        batch_size,
        buffer_size,
        chunk_size,
        skip_special_tokens,
        seed,
        rank=0,
        world_size=1,
        read_ahead=None,
    ):
        if tokenizer is None and _is_sentence_transformer(model):
            tokenizer = model.tokenizer
        if tokenizer is None:
            raise TypeError(f"a {type(model).__name__} needs its tokenizer: pass tokenizer=.")
        self.hookpoints = _resolve_hookpoints(model, hookpoints)
        limit = _model_limit(model, tokenizer)
        if limit is not None and context_size > limit:
            raise ValueError(
                f"context_size={context_size} is beyond the model's limit of {limit} tokens."
            )
        lower = _is_sentence_transformer(model) and bool(getattr(model[0], "do_lower_case", False))
        self.framing = _Framing(tokenizer, lower)
        self.forward = _MultiHook(model, tokenizer, self.hookpoints)
        self.corpus, self.context_size, self.batch_size = corpus, context_size, batch_size
        self.buffer_size, self.chunk_size = buffer_size, chunk_size
        self.skip_special_tokens = skip_special_tokens
        # Forward batches computed ahead: enough to refill a chunk while the SAEs train on it.
        if read_ahead is None:
            read_ahead = -(-chunk_size // (batch_size * context_size)) + 1
        self.rank, self.world_size, self.read_ahead = rank, world_size, read_ahead
        self.position = (0, 0)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.buffer, self.n_buffered = None, 0
        self.n_windows = 0

    # -- state --------------------------------------------------------------------------------
    def state_dict(self):
        """JSON-able state and the buffer's rows (a dict of arrays)."""
        state = {
            "position": list(self.position),
            "rng": self.rng.bit_generator.state,
            "n_windows": self.n_windows,
        }
        rows = (
            {h: self.buffer[h][: self.n_buffered] for h in self.hookpoints} if self.buffer else {}
        )
        return state, rows

    def load_state_dict(self, state, rows):
        self.position = tuple(state["position"])
        self.rng.bit_generator.state = state["rng"]
        self.n_windows = int(state["n_windows"])
        self.n_buffered = 0
        if rows:
            self._append({h: rows[h] for h in self.hookpoints})

    def restart(self):
        """Start another pass from the corpus's beginning (the buffer is empty at the end of
        a pass; its random generator goes on)."""
        self.position, self.n_windows = (0, 0), 0

    # -- reading ------------------------------------------------------------------------------
    def _batches(self):
        """``(rows per hookpoint, position after the batch, windows)`` per forward batch."""
        for rows, position, ids, _ in self._token_batches():
            yield rows, position, ids.shape[0]

    def _token_batches(self):
        """``(rows per hookpoint, position after the batch, token ids, kept)`` per forward
        batch: the windows' ids (n_windows, context_size) and the mask of the positions that
        gave rows, in row order (what a capture's provenance records)."""
        windows = _windows(
            self.corpus,
            self.framing,
            self.context_size,
            self.position,
            self.rank,
            self.world_size,
        )
        special = self.framing.special
        while True:
            batch = list(itertools.islice(windows, self.batch_size))
            if not batch:
                return
            ids = torch.tensor([ids for ids, _ in batch])
            hidden = self.forward(ids)
            keep = np.ones(ids.shape, dtype=bool)
            if self.skip_special_tokens and special.size:
                keep = ~np.isin(ids.numpy(), special)
            rows = {h: t.reshape(*ids.shape, -1).numpy()[keep] for h, t in hidden.items()}
            yield rows, batch[-1][1], ids.numpy(), keep

    def _reader(self, out, stop):
        try:
            for item in self._batches():
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item = _END
        except BaseException as exc:  # handed to the consumer, which raises it
            item = exc
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _append(self, rows):
        n = next(iter(rows.values())).shape[0]
        if self.buffer is None or self.n_buffered + n > len(next(iter(self.buffer.values()))):
            capacity = max(2 * (self.n_buffered + n), self.buffer_size + self.chunk_size)
            grown = {}
            for h, value in rows.items():
                grown[h] = np.empty((capacity, value.shape[1]), np.float32)
                if self.buffer is not None:
                    grown[h][: self.n_buffered] = self.buffer[h][: self.n_buffered]
            self.buffer = grown
        for h, value in rows.items():
            self.buffer[h][self.n_buffered : self.n_buffered + n] = value
        self.n_buffered += n

    def _take(self, n):
        end = self.n_buffered
        if self.buffer_size == 0:
            out = {h: b[:n].copy() for h, b in self.buffer.items()}
            for b in self.buffer.values():
                b[: end - n] = b[n:end]
        else:
            picked = np.sort(self.rng.choice(end, n, replace=False))
            out = {h: b[picked] for h, b in self.buffer.items()}
            # Fill the picked rows below the new end with the unpicked rows above it.
            holes = picked[picked < end - n]
            tail = np.setdiff1d(np.arange(end - n, end), picked, assume_unique=True)
            for b in self.buffer.values():
                b[holes] = b[tail]
        self.n_buffered -= n
        return out

    def __iter__(self):
        stop = threading.Event()
        items = queue.Queue(maxsize=self.read_ahead)
        thread = threading.Thread(target=self._reader, args=(items, stop), daemon=True)
        thread.start()
        exhausted = False
        try:
            while True:
                while not exhausted and self.n_buffered < self.buffer_size + self.chunk_size:
                    item = items.get()
                    if item is _END:
                        exhausted = True
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        rows, self.position, n_windows = item
                        self._append(rows)
                        self.n_windows += n_windows
                if self.n_buffered == 0:
                    return
                yield self._take(min(self.chunk_size, self.n_buffered))
        finally:
            stop.set()
            thread.join()
