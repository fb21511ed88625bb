"""The provenance of a capture over a Corpus: one (window, position, token) row per activation
row, the window's index in the capture as the text index, equal to what the tokenizer gives
by hand, aligned with the rows through an interrupted capture, and read by the report.

The tiny BERT and GPT-2 models and the corpus of ``test_stream``.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skmpsae import TopKSAE

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
sys.path.insert(0, str(Path(__file__).parent))
from skmpsae._activations import capture_file  # noqa: E402
from skmpsae._activations.metadata import row_text_index  # noqa: E402
from skmpsae.activations import Corpus, capture  # noqa: E402
from skmpsae.inspect import context_windows, feature_statistics, write_report  # noqa: E402
from test_stream import DOCS, _tokenizer, tiny_bert  # noqa: E402

CONTEXT = 16


def _bert():
    return tiny_bert(num_hidden_layers=2)


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1,
        n_embd=16,
        n_head=2,
        vocab_size=40,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
    )
    return transformers.GPT2Model(config).eval(), _tokenizer("gpt2")


MODELS = {"bert": (_bert, "encoder.layer.1"), "gpt2": (_gpt2, "h.0")}


def _windows_by_hand(tokenizer, kind):
    """The packed windows, from the tokenizer alone: BERT frames each body as [CLS] body
    [SEP] and separates documents by [SEP] (3); the GPT-2-like tokenizer adds nothing, so a
    BOS (<eot>, 4) goes in front and <eot> separates documents."""
    prefix, suffix, separator = ([2], [3], 3) if kind == "bert" else ([4], [], 4)
    tokens = [
        t for d in DOCS for t in tokenizer(d, add_special_tokens=False)["input_ids"] + [separator]
    ]
    body = CONTEXT - len(prefix) - len(suffix)
    return [prefix + tokens[w * body : (w + 1) * body] + suffix for w in range(len(tokens) // body)]


@pytest.mark.parametrize("kind, skip", [("bert", False), ("bert", True), ("gpt2", False)], ids=str)
def test_window_provenance_equals_the_tokenizers_windows(kind, skip, tmp_path):
    build, hook = MODELS[kind]
    model, tokenizer = build()
    acts = capture(
        model,
        Corpus(DOCS),
        hook,
        tmp_path / "a.npy",
        tokenizer=tokenizer,
        context_size=CONTEXT,
        batch_size=4,
        skip_special_tokens=skip,
    )
    windows = _windows_by_hand(tokenizer, kind)
    special = set(tokenizer.all_special_ids)
    expected = [  # kind 1 for a special token, 0 otherwise; no patch; modality text
        [w, p, t, int(t in special), -1, -1, 0]
        for w, ids in enumerate(windows)
        for p, t in enumerate(ids)
        if not (skip and t in special)
    ]
    table = np.load(tmp_path / "a.npy.tokens.npy")
    assert table.dtype == np.int32 and table.shape == (acts.shape[0], 7)
    assert table.tolist() == expected
    if skip:  # every window loses its [CLS] and [SEP]s, positions still count them
        assert 0 not in table[:, 1] and len(expected) < len(windows) * CONTEXT
    # Each row is the hooked module's output at that window's position, the window run alone.
    seen = []
    handle = model.get_submodule(hook).register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        for w in (0, 7, len(windows) - 1):
            with torch.no_grad():
                model(input_ids=torch.tensor([windows[w]]))
            hidden = seen.pop()
            hidden = (hidden[0] if isinstance(hidden, tuple) else hidden)[0]
            mine = table[:, 0] == w
            np.testing.assert_allclose(acts[mine], hidden[table[mine, 1]].numpy(), atol=1e-5)
    finally:
        handle.remove()
    vocab = json.loads((tmp_path / "a.npy.vocab.json").read_text())["vocab"]
    assert vocab[str(tokenizer.convert_tokens_to_ids("cat"))] == " cat"
    # The validation split of skmpsae fit holds out whole windows.
    np.testing.assert_array_equal(row_text_index(tmp_path / "a.npy"), table[:, 0])


def test_window_provenance_survives_an_interrupt(monkeypatch, tmp_path):
    model, tokenizer = _bert()
    kw = {"tokenizer": tokenizer, "context_size": CONTEXT, "batch_size": 4}
    kw["skip_special_tokens"] = True  # batches of unequal row counts
    capture(model, Corpus(DOCS), "encoder.layer.1", tmp_path / "a.npy", **kw)
    commit, calls = capture_file._RowFile.commit, []

    def commit_then_die(self):
        commit(self)
        calls.append(1)
        if len(calls) == 3:  # before the state records the third batch
            raise KeyboardInterrupt

    monkeypatch.setattr(capture_file._RowFile, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        capture(model, Corpus(DOCS), "encoder.layer.1", tmp_path / "b.npy", **kw)
    monkeypatch.setattr(capture_file._RowFile, "commit", commit)
    partial = np.load(tmp_path / "b.npy.tokens.npy")
    assert partial[-1, 0] == 3 * 4 - 1  # three batches of four windows were written
    with open(tmp_path / "b.npy.tokens.npy", "ab") as f:
        f.write(b"\1" * 20)  # part of a batch written when the process died
    again = capture(model, Corpus(DOCS), "encoder.layer.1", tmp_path / "b.npy", **kw)
    whole = np.load(tmp_path / "a.npy.tokens.npy")
    assert (tmp_path / "b.npy.tokens.npy").read_bytes() == (
        tmp_path / "a.npy.tokens.npy"
    ).read_bytes()
    assert whole.shape == (again.shape[0], 7) and whole[-1, 0] > 12
    assert (tmp_path / "b.npy.vocab.json").read_text() == (
        tmp_path / "a.npy.vocab.json"
    ).read_text()


def test_report_of_a_window_capture_shows_the_tokens(tmp_path):
    model, tokenizer = _gpt2()
    path = tmp_path / "a.npy"
    acts = capture(
        model, Corpus(DOCS), "h.0", path, tokenizer=tokenizer, context_size=CONTEXT, batch_size=4
    )
    sae = TopKSAE(n_components=8, n_nonzero_coefs=2, max_iter=1, random_state=0).fit(acts)
    table = np.load(str(path) + ".tokens.npy")
    stats = feature_statistics(sae, acts, n_top=3)
    # A top row's context stays inside its window: no row of the window before or after.
    contexts = context_windows(stats.top_rows, table[:, 0], window=CONTEXT)
    for atom, rows in zip(stats.top_rows, contexts, strict=True):
        for row, ctx in zip(atom, rows, strict=True):
            if row >= 0:
                inside = np.flatnonzero(table[:, 0] == table[row, 0])
                assert ctx[ctx >= 0].tolist() == inside.tolist()
    site = write_report(sae, path, tmp_path / "site", n_top=3, window=2)
    chunk = (site / "data" / "atoms_0000.js").read_text()
    atoms = json.loads(chunk[chunk.index(",") + 1 : chunk.rindex(")")])
    shown = 0
    for atom in atoms:
        for context in atom["contexts"]:
            row = context["row"]
            near = [
                r
                for r in range(row - 2, row + 3)
                if 0 <= r < len(table) and table[r, 0] == table[row, 0]
            ]
            by_hand = [" " + tokenizer.decode([int(table[r, 2])]) for r in near]
            assert [t for t in context["t"] if t] == by_hand
            shown += 1
    assert shown == 8 * 3 and '" cat"' in chunk and "row " not in chunk


def test_cli_capture_of_a_corpus_then_fit_and_report(tmp_path, capsys):
    from skmpsae.cli import main

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=64, bos_token_id=None
    )
    config.eos_token_id = None
    tokenizer = _tokenizer("gpt2")
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    acts = tmp_path / "acts.npy"
    argv = ["capture", str(tmp_path / "lm"), "--hookpoint", "transformer.h.0"]
    argv += ["--corpus", str(corpus), "--text-field", "body", "--context-size", str(CONTEXT)]
    argv += ["--keep-special-tokens"]  # every window position, as _windows_by_hand cuts them
    assert main([*argv, "--batch-size", "4", "-o", str(acts), "-q"]) == 0
    windows = _windows_by_hand(tokenizer, "gpt2")
    out = capsys.readouterr().out
    assert f"from {len(windows)} windows of {CONTEXT} tokens" in out
    table = np.load(str(acts) + ".tokens.npy")
    assert table[:, :3].tolist() == [
        [w, p, t] for w, ids in enumerate(windows) for p, t in enumerate(ids)
    ]
    meta = json.loads((tmp_path / "acts.npy.meta.json").read_text())
    assert meta["context_size"] == CONTEXT and meta["n_rows"] == len(table)
    assert meta["hookpoint"] == "transformer.h.0" and meta["model"] == str(tmp_path / "lm")
    # fit holds out whole windows; the report shows the windows' tokens.
    fit = ["fit", str(acts), "--model", "topk", "--n-components", "8", "--k", "2"]
    fit += ["--max-iter", "1", "--validation-fraction", "0.25", "-q"]
    assert main([*fit, "-o", str(tmp_path / "m.safetensors")]) == 0
    report = ["report", str(tmp_path / "m.safetensors"), "--acts", str(acts)]
    assert main([*report, "-o", str(tmp_path / "site"), "-q"]) == 0
    chunk = (tmp_path / "site" / "data" / "atoms_0000.js").read_text()
    assert '" cat"' in chunk and "row " not in chunk
    # The options of the other source are one-line errors.
    capsys.readouterr()
    for extra, message in (
        (["--input"], "--input applies to --texts"),
        (["--max-length", "8"], "--max-length applies to --texts"),
        (["--context-size", "999"], "--context-size 999 is beyond the model's limit of 64"),
    ):
        assert main([*argv, *extra, "-o", str(tmp_path / "x.npy")]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    texts = ["capture", str(tmp_path / "lm"), "--hookpoint", "transformer.h.0", "--texts"]
    texts += [str(corpus), "--context-size", "8", "-o", str(tmp_path / "y.npy")]
    assert main(texts) != 0
    assert "--context-size applies to --corpus" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "y.npy").exists()
