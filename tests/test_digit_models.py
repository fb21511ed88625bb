"""fetch_mnist_vit and fetch_mnist_clip: the model folders load with AutoModel,
AutoImageProcessor and AutoTokenizer, the recorded accuracy is the loaded model's, and the cache
is reused, refitted and retrained as documented. The training budget is cut to a few hundred
digits and one epoch (the full training is minutes; its accuracy is in docs/vision.md)."""

import json

import numpy as np
import pytest
import torch

from skmpsae.datasets import fetch_mnist_clip, fetch_mnist_vit, mnist_captions

transformers = pytest.importorskip("transformers")
from skmpsae._datasets import digit_models as dm  # noqa: E402


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(dm, "N_TRAIN", 256)
    monkeypatch.setattr(dm, "N_TEST", 200)


def test_vit_folder_loads_and_its_accuracy_is_the_loaded_models(small, tmp_path):
    vit = fetch_mnist_vit(cache_dir=tmp_path, max_iter=1, random_state=3)
    assert vit.path == tmp_path / "mnist-vit-3" and vit.max_iter == 1
    model = transformers.AutoModelForImageClassification.from_pretrained(vit.path).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(vit.path)
    assert type(transformers.AutoModel.from_pretrained(vit.path)).__name__ == "ViTModel"
    _, X_test, _, y_test = dm._split(3)
    digits = list(np.rint(X_test.reshape(-1, 28, 28, 1) * 255).astype(np.uint8))
    pixels = processor(digits, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, dm._pixels(X_test), atol=1e-5, rtol=0)
    with torch.no_grad():
        pred = model(pixel_values=pixels).logits.argmax(1).numpy()
    assert vit.accuracy == pytest.approx((pred == y_test).mean())
    assert vit.accuracy > 0.1  # better than chance after one epoch on 256 digits


def test_cache_is_reused_refitted_and_retrained_for_another_budget(small, tmp_path):
    first = fetch_mnist_vit(cache_dir=tmp_path, max_iter=1)
    weights = next(first.path.glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    again = fetch_mnist_vit(cache_dir=tmp_path, max_iter=1)
    assert again.accuracy == first.accuracy and weights.stat().st_mtime_ns == stamp
    fetch_mnist_vit(cache_dir=tmp_path, max_iter=1, refit=True)
    assert next(first.path.glob("*.safetensors")).stat().st_mtime_ns != stamp
    more = fetch_mnist_vit(cache_dir=tmp_path, max_iter=2)
    info = json.loads((first.path / "skmpsae-model.json").read_text())
    assert more.max_iter == info["max_iter"] == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written folder left beside it


def test_clip_folder_loads_with_its_tokenizer(small, tmp_path):
    clip = fetch_mnist_clip(cache_dir=tmp_path, max_iter=1)
    model = transformers.CLIPModel.from_pretrained(clip.path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(clip.path)
    for digit in (0, 7):
        for caption in mnist_captions(digit):
            ids = tokenizer(caption)["input_ids"]
            assert tokenizer.unk_token_id not in ids, caption
            assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    _, X_test, _, y_test = dm._split(0)
    assert clip.accuracy == pytest.approx(
        dm.zero_shot_accuracy(model, tokenizer, dm._pixels(X_test), y_test)
    )
    assert 0 < clip.modality_gap < 2  # distance between means of unit vectors


def test_captions_and_bad_parameters():
    assert mnist_captions(7)[:3] == ["a handwritten seven", "the digit 7", "7"]
    assert len(set(mnist_captions(1))) == len(mnist_captions(1))
    with pytest.raises(ValueError, match="digit"):
        mnist_captions(10)
    with pytest.raises(ValueError, match="max_iter"):
        fetch_mnist_vit(max_iter=0)
