"""Checkpoints, exact resume and atomic outputs: runs killed with SIGKILL, then resumed.

The killed runs are CLI fits in subprocesses on small data, checkpointing at every step so that
the kill lands anywhere (in a step, in a checkpoint write); they take a few seconds each.
"""

import io
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from scipy import sparse

from skmpsae import MatchingPursuitSAE, ReLUSAE, TopKSAE
from skmpsae._atomic import atomic_write
from skmpsae._train import checkpoint as _checkpoint
from skmpsae._train.checkpoint import CheckpointError
from skmpsae.cli import main

TIMEOUT = 240
ROOT = str(Path(__file__).resolve().parents[1])
FIT_ARGS = [
    "--n-components",
    "16",
    "--k",
    "3",
    "--max-iter",
    "8",
    "--batch-size",
    "50",
    "--random-state",
    "0",
    "--device",
    "cpu",
    "-q",
]
N_STEPS = 8 * 40  # 2,000 rows in batches of 50


@pytest.fixture
def data_file(tmp_path):
    rng = np.random.RandomState(0)
    X = rng.rand(2000, 4) @ rng.randn(4, 16) + 0.05 * rng.randn(2000, 16)
    path = tmp_path / "data.npy"
    np.save(path, X.astype(np.float32))
    return path


def _env():
    return {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    }


def _cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "skmpsae", *args],
        env=_env(),
        text=True,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _checkpoint_step(directory):
    """The step of the checkpoint in ``directory`` (-1 while there is none)."""
    try:
        payload = torch.load(directory / "checkpoint.pt", weights_only=True)
    except FileNotFoundError:
        return -1
    return payload["trainer"]["step"]


def _fit_killed_after(data, directory, output, step, resume):
    """Start a checkpointing CLI fit; SIGKILL it once its checkpoint has reached ``step``."""
    args = [
        "fit",
        str(data),
        *FIT_ARGS,
        "--checkpoint-dir",
        str(directory),
        "--checkpoint-every",
        "1",
        "-o",
        str(output),
    ] + (["--resume"] if resume else [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "skmpsae", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while _checkpoint_step(directory) < step:
            if proc.poll() is not None:
                pytest.fail(f"the fit ended before step {step}: {proc.stderr.read()}")
            assert time.monotonic() < deadline, "the fit did not reach its step in time"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not output.exists()


def _assert_same_model(a, b):
    for attr in ("components_", "intercept_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    assert a.loss_curve_ == b.loss_curve_
    assert (a.n_iter_, a.n_steps_, a.n_dead_components_) == (
        b.n_iter_,
        b.n_steps_,
        b.n_dead_components_,
    )


@pytest.mark.parametrize("kill_steps", [[55], [37, 170]], ids=["killed-once", "killed-twice"])
def test_killed_fit_resumes_bit_identically(kill_steps, data_file, tmp_path):
    status, _, stderr = _cli("fit", str(data_file), *FIT_ARGS, "-o", str(tmp_path / "a.joblib"))
    assert status == 0, stderr
    straight = joblib.load(tmp_path / "a.joblib")

    directory, output = tmp_path / "ckpt", tmp_path / "b.joblib"
    for i, step in enumerate(kill_steps):
        _fit_killed_after(data_file, directory, output, step, resume=i > 0)
    assert 0 < _checkpoint_step(directory) < N_STEPS
    status, _, stderr = _cli(
        "fit",
        str(data_file),
        *FIT_ARGS,
        "--checkpoint-dir",
        str(directory),
        "--checkpoint-every",
        "1",
        "--resume",
        "-o",
        str(output),
    )
    assert status == 0, stderr
    _assert_same_model(joblib.load(output), straight)
    assert _checkpoint_step(directory) == N_STEPS
    assert [p.name for p in directory.iterdir()] == ["checkpoint.pt"]


# -- the Python API ------------------------------------------------------------------------
ESTIMATORS = {"mp": MatchingPursuitSAE, "topk": TopKSAE, "relu": ReLUSAE}


def _small(name, **params):
    base = {"n_components": 12, "max_iter": 3, "batch_size": 32, "random_state": 0, "device": "cpu"}
    base.update({"alpha": 0.5} if name == "relu" else {"n_nonzero_coefs": 3})
    base.update(params)
    return ESTIMATORS[name](**base)


def _small_data(n=100, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.rand(n, 3) @ rng.randn(3, 10) + 0.05 * rng.randn(n, 10)).astype(np.float32)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_resume_from_every_checkpoint_of_a_fit(name, tmp_path, monkeypatch):
    """Resuming from the checkpoint saved at any step gives the uninterrupted model."""
    X = _small_data(116)  # batches of 32, 32, 32 and 20 rows
    straight = _small(name).fit(X)
    directory, saved = tmp_path / "ckpt", []
    save = _checkpoint.save_checkpoint

    def keep_copy(*args):
        save(*args)
        saved.append((directory / "checkpoint.pt").read_bytes())

    monkeypatch.setattr(_checkpoint, "save_checkpoint", keep_copy)
    sae = _small(name).fit(X, checkpoint_dir=directory, checkpoint_every=1)
    monkeypatch.undo()
    _assert_same_model(sae, straight)
    # A checkpoint after each of the 4 steps of an epoch, and one more at each epoch's end.
    assert len(saved) == 3 * (4 + 1)
    for content in saved:
        (directory / "checkpoint.pt").write_bytes(content)
        _assert_same_model(_small(name).fit(X, checkpoint_dir=directory, resume=True), straight)


def test_resume_refuses_another_run(tmp_path):
    X = _small_data()
    _small("mp").fit(X, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(CheckpointError, match=r"n_components=12 there, 8 here"):
        _small("mp", n_components=8).fit(X, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="is of a MatchingPursuitSAE, not a TopKSAE"):
        _small("topk").fit(X, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(
        CheckpointError,
        match=r"shape \(100, 10\) \(float32\), got \(100, 10\) "
        r"\(float64\)",
    ):
        _small("mp").fit(X.astype(np.float64), checkpoint_dir=tmp_path, resume=True)
    # verbose, callback and device do not change what is computed.
    resumed = _small("mp", verbose=0, callback=print).fit(X, checkpoint_dir=tmp_path, resume=True)
    _assert_same_model(resumed, _small("mp").fit(X))


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"checkpoint_every": 0}, ValueError, "checkpoint_every must be a positive integer"),
        ({"checkpoint_every": True}, ValueError, "checkpoint_every must be a positive integer"),
        ({"resume": True}, ValueError, "resume=True needs the checkpoint_dir"),
        ({"resume": "yes", "checkpoint_dir": "x"}, TypeError, "resume must be True or False"),
    ],
)
def test_bad_checkpoint_arguments(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        _small("mp").fit(_small_data(), **kwargs)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_partial_fit_after_pickling_keeps_adam_moments(name):
    X, X2 = _small_data(seed=0), _small_data(seed=1)
    straight = _small(name).partial_fit(X).partial_fit(X2)
    restored = pickle.loads(pickle.dumps(_small(name).partial_fit(X)))
    _assert_same_model(restored.partial_fit(X2), straight)
    # Without the moments the step goes elsewhere: the pickle must carry them.
    forgetful = pickle.loads(pickle.dumps(_small(name).partial_fit(X)))
    del forgetful._trainer_state
    assert not np.array_equal(forgetful.partial_fit(X2).components_, straight.components_)


def test_refit_drops_pickled_moments():
    X = _small_data()
    restored = pickle.loads(pickle.dumps(_small("mp").partial_fit(X)))
    restored.fit(X)
    assert "_trainer_state" not in restored.__dict__
    _assert_same_model(restored, _small("mp").fit(X))


# -- bad --resume inputs on the command line -----------------------------------------------
def _assert_one_line_error(stderr, *fragments):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("skmpsae fit: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _run_main(capsys, *args):
    status = main(list(args))
    return status, capsys.readouterr().err


@pytest.fixture
def small_run(tmp_path):
    """A small .npy file and a completed CLI fit's checkpoint directory on it."""
    data = tmp_path / "small.npy"
    np.save(data, _small_data(200))
    directory = tmp_path / "ckpt"
    args = [
        "fit",
        str(data),
        "--n-components",
        "12",
        "--k",
        "3",
        "--max-iter",
        "2",
        "--batch-size",
        "50",
        "--random-state",
        "0",
        "--device",
        "cpu",
        "-q",
    ]
    assert main([*args, "--checkpoint-dir", str(directory), "-o", str(tmp_path / "m.joblib")]) == 0
    return data, directory, args


def test_resume_without_checkpoint_dir_is_a_usage_error(small_run, tmp_path, capsys):
    data, _, args = small_run
    status, stderr = _run_main(capsys, *args, "--resume", "-o", str(tmp_path / "x.joblib"))
    assert status == 2 and "--resume needs --checkpoint-dir" in stderr


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("missing directory", ["no such checkpoint directory"]),
        ("empty directory", ["no checkpoint to resume from", "checkpoint.pt is missing"]),
        ("other model", ["other parameters", "n_components=12 there, 8 here"]),
        ("other estimator", ["is of a MatchingPursuitSAE, not a TopKSAE"]),
        ("other data", ["data of shape (200, 10) (float32), got (150, 10) (float32)"]),
        ("truncated file", ["corrupted or not a skmpsae checkpoint"]),
        ("garbage file", ["corrupted or not a skmpsae checkpoint"]),
        ("foreign torch file", ["not a skmpsae checkpoint"]),
    ],
)
def test_bad_resume_inputs_give_one_line_errors(case, fragments, small_run, tmp_path, capsys):
    data, directory, args = small_run
    args = list(args)
    checkpoint = directory / "checkpoint.pt"
    if case == "missing directory":
        directory = tmp_path / "nowhere"
    elif case == "empty directory":
        checkpoint.unlink()
    elif case == "other model":
        args[args.index("--n-components") + 1] = "8"
    elif case == "other estimator":
        args += ["--model", "topk"]
    elif case == "other data":
        np.save(data, _small_data(150))
    elif case == "truncated file":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif case == "garbage file":
        checkpoint.write_bytes(b"\x00not a checkpoint\n" * 50)
    else:
        buffer = io.BytesIO()
        torch.save({"weights": torch.zeros(3)}, buffer)
        checkpoint.write_bytes(buffer.getvalue())
    output = tmp_path / "out.joblib"
    status, stderr = _run_main(
        capsys, *args, "--checkpoint-dir", str(directory), "--resume", "-o", str(output)
    )
    assert status == 1
    _assert_one_line_error(stderr, *fragments)
    assert not output.exists()


def test_resume_of_a_finished_fit_gives_its_model(small_run, tmp_path, capsys):
    data, directory, args = small_run
    status, _ = _run_main(
        capsys,
        *args,
        "--checkpoint-dir",
        str(directory),
        "--resume",
        "-o",
        str(tmp_path / "again.joblib"),
    )
    assert status == 0
    _assert_same_model(joblib.load(tmp_path / "again.joblib"), joblib.load(tmp_path / "m.joblib"))


# -- atomic outputs ------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_write(target) as file:
            file.write(b"new, half")
            raise RuntimeError("midway")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with atomic_write(target) as file:
        file.write(b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("previous", [True, False], ids=["over-a-file", "new-file"])
def test_sigkill_while_encode_writes_leaves_no_partial_file(previous, tmp_path):
    rng = np.random.RandomState(0)
    X = rng.randn(40000, 32).astype(np.float32)
    data = tmp_path / "data.npy"
    np.save(data, X)
    model = MatchingPursuitSAE(
        n_components=128, n_nonzero_coefs=16, max_iter=1, random_state=0, device="cpu"
    ).fit(X[:500])
    joblib.dump(model, tmp_path / "model.joblib")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "codes.npz"
    old = sparse.csr_matrix(np.eye(3, dtype=np.float32))
    if previous:
        sparse.save_npz(output, old)

    def snapshot():
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in out_dir.iterdir()}

    before = snapshot()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skmpsae",
            "encode",
            str(tmp_path / "model.joblib"),
            str(data),
            "-o",
            str(output),
            "-q",
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        # Kill the moment the output directory changes: the write has begun.
        while snapshot() == before and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "encode finished before it could be killed"
    if output.exists():
        codes = sparse.load_npz(output)  # complete: the previous file or the new one
        if previous and codes.shape == old.shape:
            assert (codes != old).nnz == 0
        else:
            assert codes.shape == (40000, 128)
    else:
        assert not previous


def test_a_run_removes_the_temporary_file_of_a_killed_write(tmp_path):
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.txt"
    other.write_text("kept")
    _small("mp").fit(_small_data(), checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "notes.txt"]
