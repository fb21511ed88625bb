"""``skmpsae train`` as complete as ``fit``: provenance in every SAE it writes (so that info,
evaluate and export work on it), passes over a finite corpus, warnings with the numbers,
Ctrl-C that names the checkpoint and the command to resume, an output that must be a
directory; and special tokens left out by default, in capture and in train. A tiny GPT-2
saved as a model directory; nothing is downloaded."""

import json
import shlex
import signal

import numpy as np
import pytest

from skmpsae import io
from skmpsae.cli import main

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron".split()
HOOK = "transformer.h.1"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 (an end-of-text token between documents, a special token) on disk."""
    import torch

    vocab = {"[UNK]": 0, "<eot>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", bos_token="<eot>", eos_token="<eot>"
    )
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=len(vocab), n_positions=32
    )
    config.bos_token_id = config.eos_token_id = 1
    directory = tmp_path_factory.mktemp("models") / "gpt2"
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.RandomState(0)
    docs = [" ".join(rng.choice(WORDS, rng.randint(5, 15))) for _ in range(60)]
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("\n".join(docs) + "\n")
    return path


def _train_argv(gpt2_dir, corpus, out, *extra):
    argv = ["train", str(gpt2_dir), "--corpus", str(corpus), "--hookpoints", HOOK]
    argv += ["--context-size", "16", "--n-components", "8", "--k", "2"]
    argv += ["--sae-batch-size", "32", "--chunk-size", "64", "--buffer-size", "100"]
    return [*argv, *extra, "-o", str(out), "-q"]


def _capture_rows(gpt2_dir, corpus, out, *extra):
    argv = ["capture", str(gpt2_dir), "--hookpoint", HOOK, "--corpus", str(corpus)]
    assert main([*argv, "--context-size", "16", *extra, "-o", str(out), "-q"]) == 0
    return np.load(out)


def test_a_streamed_sae_records_what_fit_records(gpt2_dir, corpus, tmp_path, capsys):
    X = _capture_rows(gpt2_dir, corpus, tmp_path / "acts.npy")
    capsys.readouterr()
    assert main(_train_argv(gpt2_dir, corpus, tmp_path / "out", "--max-iter", "2")) == 0
    out = capsys.readouterr().out
    sae = io.load(tmp_path / "out" / f"{HOOK}.safetensors")
    seen = sae.provenance_
    # Two passes over the corpus: twice the rows that a capture of the same windows holds.
    assert seen["tokens_seen"] == 2 * X.shape[0] and seen["passes"] == 2
    assert seen["tokens_per_pass"] == X.shape[0]
    assert f"{sae.n_steps_} steps on {2 * X.shape[0]} tokens (2 passes)" in out
    assert seen["model"] == str(gpt2_dir.resolve()) and seen["hookpoint"] == HOOK
    assert seen["model_id"] == f"GPT2LMHeadModel:{gpt2_dir.resolve()}"
    assert seen["context_size"] == 16 and seen["skip_special_tokens"] is True
    assert seen["special_token_ids"] == [0, 1]
    import hashlib

    digest = hashlib.sha256()
    for line in corpus.read_text().splitlines():
        digest.update(line.encode() + b"\0")
    assert seen["corpus_sha256"] == digest.hexdigest()
    # The capture of the same windows records the same place: no warning either way.
    meta = json.loads((tmp_path / "acts.npy.meta.json").read_text())
    assert {k: meta[k] for k in ("model", "model_id", "hookpoint")} == {
        k: seen[k] for k in ("model", "model_id", "hookpoint")
    }

    assert main(["info", str(tmp_path / "out" / f"{HOOK}.safetensors")]) == 0
    info = capsys.readouterr().out
    assert f"trained {sae.n_steps_} steps on {2 * X.shape[0]} tokens streamed (2 passes" in info
    assert "epochs" not in info and "trained on activations streamed with:" in info
    assert "corpus sha256" in info and digest.hexdigest() in info

    assert (
        main(["export", str(tmp_path / "out" / f"{HOOK}.safetensors"), "-o", str(tmp_path / "sl")])
        == 0
    )
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    assert cfg["metadata"]["model_name"] == str(gpt2_dir.resolve())
    assert cfg["metadata"]["hook_name"] == HOOK

    (tmp_path / "t.txt").write_text("alpha beta gamma\ndelta zeta eta theta\n")
    evaluate = [
        "evaluate",
        str(tmp_path / "out" / f"{HOOK}.safetensors"),
        str(tmp_path / "acts.npy"),
    ]
    assert main([*evaluate, "--texts", str(tmp_path / "t.txt"), "-q"]) == 0
    result = capsys.readouterr()
    assert "skipped" not in result.out and "warning" not in result.err


def test_too_few_tokens_and_passes_are_warned_with_the_numbers(gpt2_dir, corpus, tmp_path, capsys):
    argv = _train_argv(gpt2_dir, corpus, tmp_path / "a", "--tokens", "500")
    argv.remove("--sae-batch-size")
    argv.remove("32")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "skmpsae train: warning: transformer.h.1: MatchingPursuitSAE: 500 tokens in chunks of "
        "--chunk-size 64 rows and batches of --sae-batch-size 512 rows make 8 optimiser steps, "
        "too few to learn much" in err
    )
    assert "passes (--max-iter)" in err
    assert io.load(tmp_path / "a" / f"{HOOK}.safetensors").provenance_["tokens_seen"] == 500
    assert main(_train_argv(gpt2_dir, corpus, tmp_path / "b", "--tokens", "100000")) == 0
    err = capsys.readouterr().err
    assert "fewer than --tokens 100000: trained on all of them" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "M", "--corpus", "c.txt", "--hookpoints", "h", "-o", "out.safetensors"],
        ["report", "m.safetensors", "--acts", "a.npy", "-o", "x.md"],
        ["report", "m.safetensors", "--acts", "a.npy", "-o", "page.HTML"],
    ],
)
def test_an_output_folder_named_like_a_file_is_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a directory; name a folder, e.g. -o " in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_names_the_checkpoint_and_the_resume_command(
    gpt2_dir, corpus, tmp_path, capsys, monkeypatch
):
    from skmpsae._models.base import _BaseSAE

    argv = _train_argv(gpt2_dir, corpus, tmp_path / "whole", "--checkpoint-every", "64")
    assert main(argv) == 0
    whole = io.load(tmp_path / "whole" / f"{HOOK}.safetensors")
    capsys.readouterr()

    partial_fit, calls = _BaseSAE._partial_fit, []

    def interrupted_on_the_third_chunk(self, X, *, n_steps):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)  # mid-chunk: the chunk still completes
        return partial_fit(self, X, n_steps=n_steps)

    monkeypatch.setattr(_BaseSAE, "_partial_fit", interrupted_on_the_third_chunk)
    argv = _train_argv(gpt2_dir, corpus, tmp_path / "cut", "--checkpoint-every", "100000")
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    assert err.startswith("skmpsae train: interrupted after 192 of ")
    assert f"the checkpoint is {checkpoint}; continue with: skmpsae train " in err
    command = shlex.split(err.split("continue with: ")[1])
    assert command[0] == "skmpsae" and command[-1] == "--resume" and checkpoint.is_file()
    monkeypatch.setattr(_BaseSAE, "_partial_fit", partial_fit)
    assert main(command[1:]) == 0
    resumed = io.load(tmp_path / "cut" / f"{HOOK}.safetensors")
    np.testing.assert_array_equal(resumed.components_, whole.components_)
    assert resumed.n_steps_ == whole.n_steps_ and not checkpoint.exists()


def test_special_tokens_are_left_out_by_default(gpt2_dir, corpus, tmp_path, capsys):
    from skmpsae._activations.capture_file import _special_tokens_choice

    tokens = {}
    for name, extra in (("default", ()), ("keep", ("--keep-special-tokens",))):
        X = _capture_rows(gpt2_dir, corpus, tmp_path / f"{name}.npy", *extra)
        ids = np.load(tmp_path / f"{name}.npy.tokens.npy")[:, 2]
        meta = json.loads((tmp_path / f"{name}.npy.meta.json").read_text())
        assert meta["special_token_ids"] == [0, 1] and X.shape[0] == ids.shape[0]
        tokens[name] = ids
        assert meta["skip_special_tokens"] is (name == "default")
    assert not np.isin(tokens["default"], [0, 1]).any()
    assert np.isin(tokens["keep"], [1]).any()
    np.testing.assert_array_equal(tokens["default"], tokens["keep"][tokens["keep"] > 1])
    capsys.readouterr()
    X = _capture_rows(gpt2_dir, corpus, tmp_path / "old.npy", "--skip-special-tokens")
    assert "note: --skip-special-tokens is the default now" in capsys.readouterr().err
    assert X.shape[0] == tokens["default"].shape[0]
    # An interrupted capture of the old default resumes with the choice it recorded.
    state = tmp_path / "x.npy.capture.json"
    state.write_text(json.dumps({"skip_special_tokens": False, "texts_done": 0, "rows": 0}))
    assert _special_tokens_choice(tmp_path / "x.npy", None, overwrite=False) is False
    assert _special_tokens_choice(tmp_path / "x.npy", None, overwrite=True) is True
    assert _special_tokens_choice(tmp_path / "y.npy", None, overwrite=False) is True
    assert _special_tokens_choice(tmp_path / "x.npy", True, overwrite=False) is True


def test_rows_of_another_kind_or_place_are_warned_about(gpt2_dir, corpus, tmp_path, capsys):

    assert main(_train_argv(gpt2_dir, corpus, tmp_path / "out")) == 0
    model = str(tmp_path / "out" / f"{HOOK}.safetensors")
    _capture_rows(gpt2_dir, corpus, tmp_path / "keep.npy", "--keep-special-tokens")
    capsys.readouterr()
    commands = {
        "encode": ["encode", model, str(tmp_path / "keep.npy"), "-o", str(tmp_path / "c.npz")],
        "evaluate": ["evaluate", model, str(tmp_path / "keep.npy"), "--no-splice"],
        "report": [
            "report",
            model,
            "--acts",
            str(tmp_path / "keep.npy"),
            "-o",
            str(tmp_path / "r"),
        ],
    }
    for name, argv in commands.items():
        assert main([*argv, "-q"]) == 0, name
        warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert warned == [
            f"skmpsae {name}: warning: {tmp_path / 'keep.npy'}: rows captured with special "
            "tokens ([CLS], BOS...), but the model was trained on rows without special tokens; "
            "capture again without --keep-special-tokens to compare like with like."
        ], name
    # report, like evaluate, names rows of another hookpoint.
    _capture_rows(gpt2_dir, corpus, tmp_path / "other.npy")
    meta = json.loads((tmp_path / "other.npy.meta.json").read_text())
    (tmp_path / "other.npy.meta.json").write_text(
        json.dumps({**meta, "hookpoint": "transformer.h.0"})
    )
    capsys.readouterr()
    argv = ["report", model, "--acts", str(tmp_path / "other.npy"), "-o", str(tmp_path / "r2")]
    assert main([*argv, "-q"]) == 0
    err = capsys.readouterr().err
    assert "skmpsae report: warning: " in err
    assert "hookpoint 'transformer.h.0' (fitted on 'transformer.h.1')" in err


def test_info_on_an_activation_file_shows_its_high_norm_positions(
    gpt2_dir, corpus, tmp_path, capsys
):
    rng = np.random.RandomState(0)
    X = rng.randn(400, 8).astype(np.float32)
    positions = np.tile(np.arange(10), 40)
    X[positions == 0] *= 10  # a first position far above the rest, as in GPT-style models
    np.save(tmp_path / "acts.npy", X)
    table = np.stack([np.repeat(np.arange(40), 10), positions, positions + 5], axis=1)
    np.save(tmp_path / "acts.npy.tokens.npy", table.astype(np.int32))
    assert main(["info", str(tmp_path / "acts.npy"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    assert summary["norm"]["median"] == pytest.approx(np.median(norms))
    by_position = {str(p): (n, mean) for p, n, mean in summary["by_position"]}
    assert by_position["0"] == (40, pytest.approx(norms[positions == 0].mean()))
    assert by_position["8+"] == (80, pytest.approx(norms[positions >= 8].mean()))
    assert summary["high_norm_positions"] == [0]
    assert main(["info", str(tmp_path / "acts.npy")]) == 0
    assert "high-norm positions: 0 (mean norm over 3x the median" in capsys.readouterr().out
    # With the capture's sidecar: special tokens against the others.
    X2 = _capture_rows(gpt2_dir, corpus, tmp_path / "keep.npy", "--keep-special-tokens")
    ids = np.load(tmp_path / "keep.npy.tokens.npy")[:, 2]
    capsys.readouterr()
    assert main(["info", str(tmp_path / "keep.npy"), "--json"]) == 0
    kinds = json.loads(capsys.readouterr().out)["by_kind"]
    norms = np.linalg.norm(X2.astype(np.float64), axis=1)
    assert kinds["special"] == [int((ids <= 1).sum()), pytest.approx(norms[ids <= 1].mean())]
    assert kinds["normal"] == [int((ids > 1).sum()), pytest.approx(norms[ids > 1].mean())]


def test_a_failed_save_keeps_the_streamed_model(gpt2_dir, corpus, tmp_path, capsys, monkeypatch):
    import errno

    from skmpsae._activations import outputs

    out = tmp_path / "out" / f"{HOOK}.safetensors"
    real_save = io.save

    def save(estimator, path, **kw):
        if str(path) == str(out):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(estimator, path, **kw)

    monkeypatch.setattr(io, "save", save)
    monkeypatch.setattr(outputs.tempfile, "gettempdir", lambda: str(tmp_path))
    assert main(_train_argv(gpt2_dir, corpus, tmp_path / "out")) == 1
    rescued = tmp_path / next(p.name for p in tmp_path.iterdir() if p.name.startswith("skmpsae-"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"skmpsae train: error: {out}: could not save the model (No space left on device); it "
        f"is saved to {rescued} instead: move it where you want it"
    )
    assert io.load(rescued).provenance_["hookpoint"] == HOOK and not out.exists()


def test_too_little_space_fails_before_training_with_the_numbers(
    gpt2_dir, corpus, tmp_path, capsys, monkeypatch
):
    from collections import namedtuple

    import skmpsae.activations
    from skmpsae._cli import disk

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))
    trained = []
    monkeypatch.setattr(skmpsae.activations, "train", lambda *a, **k: trained.append(1))
    argv = _train_argv(gpt2_dir, corpus, tmp_path / "out", "--saelens")
    argv[argv.index(HOOK)] = "transformer.h.*"  # two hookpoints of width n_embd = 16
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    # Each MP-SAE: 8 atoms x 16 features and 16 biases of float32; saved and exported.
    models = 2 * (8 * 16 + 16) * 4
    # The checkpoint: the SAEs with Adam's two moments and the buffer's rows (--buffer-size
    # 100 and a forward batch of 8 windows of 16), twice while it is replaced.
    checkpoint = 2 * (3 * models + (100 + 8 * 16) * 2 * 16 * 4)
    total = int(2 * models * 1.2) + int(checkpoint * 1.2)
    assert err == (
        f"skmpsae train: error: {tmp_path}: 0.0 MiB free, but training will write "
        f"{total / 2**20:.1f} MiB there (the SAEs and their --saelens exports "
        f"~{2 * models / 2**20:.1f} MiB, the checkpoint of the SAEs, Adam's moments and "
        f"--buffer-size rows ~{checkpoint / 2**20:.1f} MiB, with a 20% margin); free some "
        "space or write elsewhere"
    )
    assert not trained and not (tmp_path / "out").exists()
