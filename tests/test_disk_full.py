"""A full disk loses no work: ``fit`` checks the free space for the model and its checkpoints
before training and fails with the numbers; a save that still fails names the path and keeps
the trained model in the temporary directory. ENOSPC is injected in-process, and, where the
test may mount one (as root, with ``mount``), met for real on a small tmpfs."""

import errno
import os
import shutil
import subprocess
from collections import namedtuple

import numpy as np
import pytest

from skmpsae import io
from skmpsae._cli import disk
from skmpsae.cli import main

ARGS = ["--n-components", "64", "--k", "3", "--max-iter", "2", "--random-state", "0", "-q"]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.RandomState(0).rand(300, 40).astype(np.float32))
    return path


def test_too_little_space_fails_before_training_with_the_numbers(
    data, tmp_path, capsys, monkeypatch
):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))
    trained = []
    monkeypatch.setattr("skmpsae.MatchingPursuitSAE.fit", lambda *a, **k: trained.append(1))
    out = tmp_path / "m.safetensors"
    assert main(["fit", str(data), *ARGS, "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    # 64 atoms x 40 features of float32 and the 40 biases: 10,400 bytes; 20% margin.
    size = (64 * 40 + 40) * 4
    assert err == (
        f"skmpsae fit: error: {tmp_path}: 0.0 MiB free, but training will write "
        f"{int(size * 1.2) / 2**20:.1f} MiB there (the model ~{size / 2**20:.1f} MiB, with a "
        "20% margin); free some space or write elsewhere"
    )
    assert not trained and not out.exists()


def test_a_failed_save_names_the_path_and_keeps_the_model(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"the earlier file")
    real_save = io.save

    def no_space_at(path_wanted):
        def save(estimator, path, **kw):
            if str(path) == str(path_wanted):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_save(estimator, path, **kw)

        return save

    monkeypatch.setattr(io, "save", no_space_at(out))
    monkeypatch.setattr(disk.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert main(["fit", str(data), *ARGS, "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    rescued = next((tmp_path / "tmp").iterdir())
    assert err == (
        f"skmpsae fit: error: {out}: could not save the model (No space left on device); the "
        f"trained model is saved to {rescued} instead: move it where you want it"
    )
    assert out.read_bytes() == b"the earlier file"  # never half-written
    model = io.load(rescued)
    assert model.n_iter_ == 2 and model.components_.shape == (64, 40)
    X = np.load(data)
    again = io.load(rescued).transform(X)
    assert again.shape == (300, 64)


def test_report_checks_space_and_names_a_failed_write(data, tmp_path, capsys, monkeypatch):
    from skmpsae._inspect import site

    model = tmp_path / "m.safetensors"
    assert main(["fit", str(data), *ARGS, "-o", str(model)]) == 0
    argv = ["report", str(model), "--acts", str(data), "-o", str(tmp_path / "r"), "-q"]
    Usage = namedtuple("Usage", "total used free")
    real = disk.shutil.disk_usage
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"skmpsae report: error: {tmp_path}: 0.0 MiB free, but the report will")
    assert "(the report ~" in err and not (tmp_path / "r").exists()
    monkeypatch.setattr(disk.shutil, "disk_usage", real)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(site, "_assign", full)
    assert main(argv) == 1
    assert capsys.readouterr().err.strip() == (
        f"skmpsae report: error: {tmp_path / 'r'}: could not write the report (No space left "
        "on device); nothing was replaced (the report is written beside it, then moved into "
        "place)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "x.npy"]


@pytest.fixture
def tmpfs(tmp_path):
    """A tmpfs of 64 KiB mounted at ``tmp_path / "small"``, unmounted afterwards; the test is
    skipped, with the reason, where it cannot be mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mounting a tmpfs needs root and mount/umount")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_fit_into_a_small_tmpfs_fails_fast_and_keeps_the_earlier_file(data, tmpfs, capsys):
    out = tmpfs / "m.safetensors"
    out.write_bytes(b"the earlier file")
    free = shutil.disk_usage(tmpfs).free
    # 1,024 atoms x 40 features and 40 biases of float32: 164 kB, more than the 64 KiB there.
    argv = ["fit", str(data), *ARGS, "-o", str(out)]
    argv[argv.index("64")] = "1024"
    assert main(argv) == 1
    size = (1024 * 40 + 40) * 4
    assert capsys.readouterr().err.strip() == (
        f"skmpsae fit: error: {tmpfs}: {free / 2**20:.1f} MiB free, but training will write "
        f"{int(size * 1.2) / 2**20:.1f} MiB there (the model ~{size / 2**20:.1f} MiB, with a "
        "20% margin); free some space or write elsewhere"
    )
    assert out.read_bytes() == b"the earlier file"
    assert sorted(p.name for p in tmpfs.iterdir()) == ["m.safetensors"]


def test_a_tmpfs_filled_during_training_rescues_the_model(
    data, tmpfs, tmp_path, capsys, monkeypatch
):
    from skmpsae import MatchingPursuitSAE

    out = tmpfs / "m.safetensors"
    out.write_bytes(b"the earlier file")
    real_fit = MatchingPursuitSAE.fit

    def fit_then_fill(self, *args, **kwargs):
        # Something else fills the file system while the model trains (after the check).
        fitted = real_fit(self, *args, **kwargs)
        (tmpfs / "filler").write_bytes(bytes(shutil.disk_usage(tmpfs).free))
        return fitted

    monkeypatch.setattr(MatchingPursuitSAE, "fit", fit_then_fill)
    monkeypatch.setattr(disk.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert main(["fit", str(data), *ARGS, "-o", str(out)]) == 1
    rescued = next((tmp_path / "tmp").iterdir())
    assert capsys.readouterr().err.strip() == (
        f"skmpsae fit: error: {out}: could not save the model (No space left on device); the "
        f"trained model is saved to {rescued} instead: move it where you want it"
    )
    assert out.read_bytes() == b"the earlier file"
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "m.safetensors"]
    model = io.load(rescued)
    assert model.n_iter_ == 2 and model.components_.shape == (64, 40)


def test_report_into_a_small_tmpfs_fails_fast(data, tmpfs, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert main(["fit", str(data), *ARGS, "-o", str(model)]) == 0
    (tmpfs / "earlier.txt").write_text("the earlier file")
    free = shutil.disk_usage(tmpfs).free
    argv = ["report", str(model), "--acts", str(data), "-o", str(tmpfs / "r"), "-q"]
    assert main(argv) == 1
    # Per atom: 20 top and 16 band contexts of 17 tokens at ~24 bytes, and ~2 kB more.
    size = 64 * ((20 + 4 * 4) * 17 * 24 + 2048)
    assert capsys.readouterr().err.strip() == (
        f"skmpsae report: error: {tmpfs}: {free / 2**20:.1f} MiB free, but the report will "
        f"write {int(size * 1.2) / 2**20:.1f} MiB there (the report ~{size / 2**20:.1f} MiB, "
        "with a 20% margin); free some space or write elsewhere"
    )
    assert sorted(p.name for p in tmpfs.iterdir()) == ["earlier.txt"]
    assert (tmpfs / "earlier.txt").read_text() == "the earlier file"
