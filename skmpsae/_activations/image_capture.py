""":func:`skmpsae.activations.capture` with ``images=``, and of a CLIP-like model's projected
text embeddings: rows appended batch by batch to the resumable ``.npy`` file of
``capture_file``, with the provenance of every row (image, token kind, patch row and column,
modality) beside it, aligned through a resume."""

import time

import numpy as np
import torch

from .capture_file import _resume_state, _RowFile, _save_state, _state_path
from .hooks import _device_of, _resolve_module, _TokenBatcher
from .images import BadImage, ImageSource, conversion, to_channels
from .metadata import metadata_path, model_id, write_capture_metadata
from .models import _model_id, _StopForward
from .provenance import KINDS, MODALITIES, _ProvenanceWriter, provenance_path, vocab_path
from .vision import (
    EMBEDS,
    IMAGE_TOKENS,
    check_tower,
    num_channels,
    patch_size,
    pixel_shape,
    pooled_tensor,
    quiet_image_processor_note,
    run_images,
    takes_images,
    token_rows,
)


def load_image_processor(model, path):
    """The model directory's image processor (``AutoImageProcessor``), or None if it has none."""
    import transformers

    quiet_image_processor_note()
    try:
        return transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        return None


def _is_hf_processor(processor):
    return hasattr(processor, "preprocess") and hasattr(processor, "to_dict")


class _Preprocess:
    """Images (uint8 arrays (H, W, C)) -> what the model takes, through a transformers image
    processor (which resizes) or a callable of the user's, given a (B, H, W, C) uint8 array."""

    def __init__(self, model, processor, source):
        self.model, self.processor = model, processor
        self.hf = _is_hf_processor(processor)
        self.channels = num_channels(model)
        mean = getattr(processor, "image_mean", None) if self.hf else None
        if self.channels is None and isinstance(mean, (list, tuple)):
            self.channels = 1 if len(mean) == 1 else 3  # what the processor normalises
        if self.channels is None:  # a module of one's own: one channel count for the batch
            self.channels = 3 if max(source.channels) >= 3 else 1
        self.note = conversion(source.channels, self.channels)
        if not self.hf or not getattr(processor, "do_resize", False):
            why = (
                "the image processor does not resize them"
                if self.hf
                else (
                    "image_processor is given them as one (batch, height, width, channels) array; "
                    "resize them first, or pass a transformers image processor that resizes"
                )
            )
            source.check_one_size(why)

    def __call__(self, images):
        images = to_channels(images, self.channels)
        if self.hf:
            out = self.processor(
                images=images, return_tensors="pt", input_data_format="channels_last"
            )
            pixels = out["pixel_values"]
        else:
            pixels = self.processor(np.stack(images))
        device = _device_of(self.model)
        if isinstance(pixels, dict):
            return {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in pixels.items()
            }
        if not isinstance(pixels, torch.Tensor):
            raise TypeError(
                f"image_processor must return a torch.Tensor or a dict of them, got "
                f"{type(pixels).__name__}."
            )
        return pixels.to(device)


def _hooked_output(model, module, pixels, capture_input, hookpoint):
    """The hooked module's output (or input) for one batch, float32 on the CPU."""
    if module is None:  # the projected image embeddings: what get_image_features returns
        with torch.inference_mode():
            return pooled_tensor(run_images(model, pixels)).detach().to("cpu", torch.float32)
    seen = {}

    def record(value):
        if hasattr(value, "to_tuple"):  # a transformers ModelOutput: its first field
            value = value.to_tuple()
        if isinstance(value, (tuple, list)) and value:
            value = value[0]
        seen["hidden"] = value
        raise _StopForward

    if capture_input:
        handle = module.register_forward_pre_hook(
            lambda mod, args, kwargs: record(args[0] if args else next(iter(kwargs.values()))),
            with_kwargs=True,
        )
    else:
        handle = module.register_forward_hook(lambda mod, args, out: record(out))
    try:
        with torch.inference_mode():
            run_images(model, pixels)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not isinstance(seen.get("hidden"), torch.Tensor):
        raise ValueError(
            f"hookpoint {hookpoint!r} was not called on the images, or gave no tensor (a module "
            "of another tower, or one the image path does not run)."
        )
    return seen["hidden"].detach().to("cpu", torch.float32)


def capture_images(model, processor, images, hookpoint, output, options):
    """The body of ``capture(..., images=...)``; ``options`` holds capture's keyword arguments."""
    if options["image_tokens"] not in IMAGE_TOKENS:
        raise ValueError(
            f"image_tokens must be one of {', '.join(IMAGE_TOKENS)}, got "
            f"{options['image_tokens']!r}."
        )
    if not takes_images(model):
        raise ValueError(
            f"images given to a text model ({type(model).__name__} reads token ids); capturing "
            "images needs a vision or vision-language model."
        )
    check_tower(model, hookpoint, "image", "images=")
    module = None if hookpoint == EMBEDS["image"] else _resolve_module(model, hookpoint)
    if processor is None:
        raise TypeError(
            f"a {type(model).__name__} needs image_processor= (a transformers image processor, "
            "or a callable from a (batch, height, width, channels) uint8 array to the model's "
            "input tensor)."
        )
    source = images if isinstance(images, ImageSource) else ImageSource(images)
    prepare = _Preprocess(model, processor, source)
    patch = patch_size(model)

    def batch_rows(first, last):
        pixels = prepare(source[first:last])
        hidden = _hooked_output(model, module, pixels, options["capture_input"], hookpoint)
        rows, info, grid = token_rows(
            hidden, options["image_tokens"], patch, pixel_shape(pixels), hookpoint
        )
        table = np.empty((rows.shape[0], 7), dtype=np.int64)
        table[:, 0] = info[:, 0] + first
        table[:, 1], table[:, 2], table[:, 3] = info[:, 1], -1, info[:, 2]
        table[:, 4:6], table[:, 6] = info[:, 3:5], MODALITIES["image"]
        return rows, table, {"image_size": pixel_shape(pixels), "grid_size": grid}

    # The first batch tells the width and the grid; a capture that starts at 0 keeps its rows.
    first_batch = batch_rows(0, min(options["batch_size"], len(source)))
    probe_rows, _, shapes = first_batch
    settings = {
        "modality": "image",
        "hookpoint": hookpoint,
        "capture_input": bool(options["capture_input"]),
        "model": _model_id(model),
        "images_sha256": source.fingerprint(),
        "n_images": len(source),
        "image_tokens": options["image_tokens"],
        "n_features": probe_rows.shape[1],
    }
    extra = {
        "images": source.description,
        "image_size": list(shapes["image_size"] or []) or None,
        "grid_size": list(shapes["grid_size"]) if shapes["grid_size"] else None,
        "converted": prepare.note,
        "skip_special_tokens": False,
    }
    return _write_rows(
        model, output, settings, len(source), batch_rows, options, extra, first_batch
    )


def capture_text_embeds(model, tokenizer, texts, output, options, fingerprint):
    """One row per text: a CLIP-like model's projected text embedding. Texts of one length
    run together unpadded, so each row is the text's embedding run alone (SigLIP pools the
    last position, which padding would move)."""
    batcher = _TokenBatcher(model, tokenizer, options["max_length"], False)

    def batch_rows(first, last):
        inputs, keep = batcher(texts[first:last], first)
        lengths = keep.sum(dim=1)
        rows = torch.empty(0)
        for length in torch.unique(lengths).tolist():
            group = torch.nonzero(lengths == length).flatten()
            part = {k: v[group][:, :length] for k, v in inputs.items()}
            with torch.inference_mode():
                out = pooled_tensor(batcher.forward(part)).detach().to("cpu", torch.float32)
            if not rows.numel():
                rows = torch.empty(len(lengths), out.shape[1])
            rows[group] = out
        n = rows.shape[0]
        table = np.full((n, 7), -1, dtype=np.int64)
        table[:, 0] = np.arange(first, first + n)
        table[:, 3], table[:, 6] = KINDS["pooled"], MODALITIES["text"]
        return rows.numpy(), table, {}

    settings = {
        "modality": "text",
        "hookpoint": EMBEDS["text"],
        "capture_input": False,
        "model": _model_id(model),
        "texts_sha256": fingerprint,
        "n_texts": len(texts),
        "max_length": batcher.max_length,
    }
    first_batch = batch_rows(0, min(options["batch_size"], len(texts)))
    settings["n_features"] = first_batch[0].shape[1]
    # The pooled row stands for the whole text: special-token filtering never applies to it.
    extra = {"skip_special_tokens": False}
    return _write_rows(model, output, settings, len(texts), batch_rows, options, extra, first_batch)


# Rows are made durable (fsynced, counted in the headers and the resume state) at most this
# often: an fsync per batch of small images took a fifth of the capture's time. A resumed
# capture redoes the batches since the last commit, to the same bits.
COMMIT_SECONDS = 1.0


def _write_rows(model, output, settings, n_items, batch_rows, options, extra, first_batch):
    from .._train.progress import Progress

    state_path, start, n_rows = _resume_state(output, settings, options["overwrite"])
    metadata_path(output).unlink(missing_ok=True)  # written again when this capture ends
    batch_size = options["batch_size"]
    starts = range(start, n_items, batch_size)
    progress = Progress(len(starts), "capture", "batch", bool(options["verbose"]))
    out = _RowFile(output, settings["n_features"], n_rows)
    provenance = _ProvenanceWriter(output, n_rows)
    last_commit = time.monotonic()
    try:
        for first in starts:
            if first == 0:
                rows, table, _ = first_batch
            else:
                rows, table, _ = batch_rows(first, min(first + batch_size, n_items))
            out.append(rows)
            provenance.write_rows(table)
            done = first + batch_size >= n_items
            if done or time.monotonic() - last_commit >= COMMIT_SECONDS:
                provenance.commit()
                out.commit()
                _save_state(state_path, settings, first + batch_size, out.n_rows)
                last_commit = time.monotonic()
            progress.update(f"{out.n_rows} rows")
    except BadImage:
        # A source with an undecodable file will not resume as it is: leave no partial file.
        out.close()
        provenance.close()
        for path in (output, state_path, provenance_path(output), vocab_path(output)):
            path.unlink(missing_ok=True)
        raise
    finally:
        out.close()
        provenance.close()
        progress.close()
    meta = {**settings, **extra, "model": options["source"], "model_id": model_id(model)}
    write_capture_metadata(output, meta, out.n_rows)
    _state_path(output).unlink(missing_ok=True)
    return np.load(output, mmap_mode="r")
