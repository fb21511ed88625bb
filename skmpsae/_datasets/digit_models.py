"""Two small real models trained on the shipped MNIST digits, for the vision examples.

No machine here reaches a model hub, so the vision workflow needs models made locally: a ViT
classifier and a CLIP-like pair of towers trained contrastively on digits and captions
(:func:`skmpsae.datasets.fetch_mnist_vit`, :func:`skmpsae.datasets.fetch_mnist_clip`).
Each is trained on the first call and saved as a Hugging Face model directory
(``save_pretrained``, with its image processor and, for CLIP, its tokenizer), so that
``AutoModel``, ``AutoImageProcessor`` and ``skmpsae capture`` load it; later calls load the
cached directory.
"""

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

# The 4,000 / 1,000 stratified split of the 5,000 shipped digits (the one benchmarks use).
N_TRAIN, N_TEST = 4000, 1000
_IMAGE = 28
_INFO = "skmpsae-model.json"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Captions written several ways, so that the text tower learns the digit, not one wording.
TEMPLATES = (
    "a handwritten {w}",
    "the digit {d}",
    "{d}",
    "{w}",
    "a picture of a {w}",
    "the number {w}",
    "digit {w}",
    "a handwritten number {d}",
)
_SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def default_cache_dir():
    """``$SKMPSAE_HOME/models``, else ``~/.cache/skmpsae/models``."""
    home = os.environ.get("SKMPSAE_HOME")
    root = Path(home) if home else Path.home() / ".cache" / "skmpsae"
    return root / "models"


def captions(digit):
    """Every caption of ``digit`` (one per template)."""
    return [t.format(w=WORDS[digit], d=digit) for t in TEMPLATES]


def _split(random_state):
    from sklearn.model_selection import train_test_split

    # Read here, not through datasets.load_mnist: this layer sits below the public modules.
    with (resources.files("skmpsae") / "data" / "mnist_5k.npz").open("rb") as handle:
        with np.load(handle) as stored:
            X = stored["X"].astype(np.float32) / 255.0
            y = stored["y"].astype(np.int64)
    return train_test_split(
        X, y, train_size=N_TRAIN, test_size=N_TEST, stratify=y, random_state=random_state
    )


def _pixels(X):
    """Flat [0, 1] digits -> (n, 1, 28, 28) in [-1, 1], as the saved image processor makes them."""
    import torch

    return (torch.from_numpy(np.ascontiguousarray(X)).reshape(-1, 1, _IMAGE, _IMAGE) - 0.5) / 0.5


def _augmented(batch, generator):
    """Each digit rotated by up to 12 degrees, scaled by 0.9-1.1 and moved by up to 2 pixels:
    the augmentation that lets 4,000 digits train a ViT, which has no convolution's priors."""
    import torch

    n = batch.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * (2 * np.pi * 12 / 180)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (2 * 2 / (_IMAGE / 2))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = torch.nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
    # Background is -1 (black after the processor's normalisation): warp (x + 1), pad with 0.
    warped = torch.nn.functional.grid_sample(batch + 1, grid, align_corners=False)
    return warped - 1


def _vision_kwargs(hidden, layers, patch):
    return dict(
        image_size=_IMAGE,
        patch_size=patch,
        num_channels=1,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_resize=True,
        size={"height": _IMAGE, "width": _IMAGE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5],
        image_std=[0.5],
    )


def _schedule(model, steps, lr):
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    return opt, sched


def _batches(n, batch_size, generator):
    import torch

    perm = torch.randperm(n, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        yield perm[start : start + batch_size]


def _save(model_dir, write, info):
    """Write the model into a temporary folder beside ``model_dir`` and rename it into place, so
    that a killed training leaves no half-written model for the next call to load."""
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}.", suffix=".tmp"))
    try:
        write(tmp)
        (tmp / _INFO).write_text(json.dumps(info, indent=1))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cached(model_dir, refit):
    info = Path(model_dir) / _INFO
    if refit or not info.is_file():
        return None
    return json.loads(info.read_text())


def _progress(verbose, epoch, max_iter, accuracy):
    if verbose:
        print(f"epoch {epoch + 1}/{max_iter}: held-out accuracy {accuracy:.3f}", flush=True)


def train_vit(model_dir, *, max_iter, random_state, verbose, hidden=96, layers=4, patch=7):
    """Train the ViT classifier and save it in ``model_dir``; returns its info dict."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    X_train, X_test, y_train, y_test = _split(random_state)
    config = ViTConfig(**_vision_kwargs(hidden, layers, patch), num_labels=10)
    generator = torch.Generator().manual_seed(random_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        model = ViTForImageClassification(config)
    train, test = _pixels(X_train), _pixels(X_test)
    labels = torch.from_numpy(y_train)
    batch_size = 32
    opt, sched = _schedule(model, max_iter * (N_TRAIN // batch_size), 1e-3)
    accuracy = 0.0
    for epoch in range(max_iter):
        model.train()
        for idx in _batches(N_TRAIN, batch_size, generator):
            loss = model(pixel_values=_augmented(train[idx], generator), labels=labels[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = model(pixel_values=test).logits.argmax(1).numpy()
        accuracy = float((pred == y_test).mean())
        _progress(verbose, epoch, max_iter, accuracy)
    info = {"kind": "vit", "accuracy": accuracy, "max_iter": max_iter, "random_state": random_state}

    def write(tmp):
        model.save_pretrained(tmp)
        _image_processor().save_pretrained(tmp)

    _save(model_dir, write, info)
    return info


def _tokenizer():
    """A word-level tokenizer over the captions' words (CLIP's BPE needs files from the hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for d in range(10) for c in captions(d) for w in c.split()})
    vocab = {tok: i for i, tok in enumerate(_SPECIALS + tuple(words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=16,
    )


def _clip_config(tokenizer, hidden, layers, patch):
    from transformers import CLIPConfig

    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        # Not 2: CLIP then pools the hidden state at the first <eos>, not at the largest id.
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = _vision_kwargs(hidden, layers, patch)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        vision.pop(key)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden)


def clip_embeddings(model, tokenizer, pixels, texts):
    """L2-normalised image and text embeddings of a CLIPModel (torch tensors)."""
    import torch

    out = []
    if pixels is not None:
        out.append(
            torch.nn.functional.normalize(_features(model.get_image_features(pixels)), dim=-1)
        )
    if texts is not None:
        tok = tokenizer(list(texts), padding=True, return_tensors="pt")
        feats = model.get_text_features(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        )
        out.append(torch.nn.functional.normalize(_features(feats), dim=-1))
    return out


def _features(output):
    # transformers 5 returns a model output from get_*_features; 4.x a tensor.
    return output if not hasattr(output, "pooler_output") else output.pooler_output


def zero_shot_accuracy(model, tokenizer, pixels, y):
    """Each image labelled with the digit whose caption "the digit d" is nearest."""
    import torch

    with torch.no_grad():
        img, txt = clip_embeddings(model, tokenizer, pixels, [f"the digit {d}" for d in range(10)])
    return float(((img @ txt.T).argmax(1).numpy() == np.asarray(y)).mean())


def train_clip(model_dir, *, max_iter, random_state, verbose, hidden=64, layers=3, patch=7):
    """Train the two towers contrastively and save them in ``model_dir``; returns its info."""
    import torch
    from transformers import CLIPModel

    X_train, X_test, y_train, y_test = _split(random_state)
    tokenizer = _tokenizer()
    generator = torch.Generator().manual_seed(random_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        model = CLIPModel(_clip_config(tokenizer, hidden, layers, patch))
    train, test = _pixels(X_train), _pixels(X_test)
    labels = torch.from_numpy(y_train)
    all_captions = [captions(d) for d in range(10)]
    batch_size = 64
    opt, sched = _schedule(model, max_iter * (N_TRAIN // batch_size), 2e-3)
    accuracy = 0.0
    for epoch in range(max_iter):
        model.train()
        for idx in _batches(N_TRAIN, batch_size, generator):
            y = labels[idx]
            pick = torch.randint(0, len(TEMPLATES), (len(idx),), generator=generator)
            texts = [all_captions[int(d)][int(t)] for d, t in zip(y, pick, strict=True)]
            img, txt = clip_embeddings(model, tokenizer, _augmented(train[idx], generator), texts)
            logits = model.logit_scale.exp() * img @ txt.T
            # Several digits of one class share a batch: every same-digit pair is a positive.
            same = (y[:, None] == y[None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = -(target * logits.log_softmax(1)).sum(1).mean()
            loss = loss - (target * logits.log_softmax(0)).sum(0).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        accuracy = zero_shot_accuracy(model, tokenizer, test, y_test)
        _progress(verbose, epoch, max_iter, accuracy)
    with torch.no_grad():
        img, txt = clip_embeddings(model, tokenizer, test, [all_captions[d][0] for d in y_test])
    gap = float((img.mean(0) - txt.mean(0)).norm())
    info = {
        "kind": "clip",
        "accuracy": accuracy,
        "modality_gap": gap,
        "max_iter": max_iter,
        "random_state": random_state,
    }

    def write(tmp):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _image_processor().save_pretrained(tmp)

    _save(model_dir, write, info)
    return info


def fetch(kind, *, cache_dir, max_iter, random_state, refit, verbose):
    """The model directory of ``kind`` ("vit" or "clip"), trained unless cached."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    model_dir = root / f"mnist-{kind}-{random_state}"
    info = _cached(model_dir, refit)
    if info is None or info.get("max_iter") != max_iter:
        train = train_vit if kind == "vit" else train_clip
        info = train(model_dir, max_iter=max_iter, random_state=random_state, verbose=verbose)
    return Bunch(path=model_dir, **{k: v for k, v in info.items() if k != "kind"})
