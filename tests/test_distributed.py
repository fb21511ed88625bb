"""Data-parallel training: two gloo processes on one machine against one process.

Each multi-process test starts two short-lived ranks (tiny data, a few seconds each) on a free
port chosen at run time, with generous timeouts for a loaded machine; the processes are always
reaped, also when a test fails.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pytest

from _helpers import run_ranks
from skmpsae import MatchingPursuitSAE
from skmpsae._train.distributed import _ProcessGroup

WORKER = Path(__file__).with_name("_distributed_worker.py")
TIMEOUT = 240  # seconds; a two-rank run takes 3-10 s on an idle 2-core machine
# Parameters of the worker's MatchingPursuitSAE (see _distributed_worker.py).
PARAMS = {
    "n_components": 16,
    "n_nonzero_coefs": 3,
    "max_iter": 3,
    "batch_size": 50,
    "random_state": 0,
    "device": "cpu",
}
N_SAMPLES = 525  # ten full batches of 50 and a last one of 25 split over the two ranks


@pytest.fixture
def data_file(tmp_path):
    rng = np.random.RandomState(0)
    X = rng.rand(N_SAMPLES, 4) @ rng.randn(4, 12) + 0.05 * rng.randn(N_SAMPLES, 12)
    path = tmp_path / "data.npy"
    np.save(path, X)  # float64: see test_two_processes_equal_one_process for why
    return path


def _run_ranks(mode, data, out_dir, world_size=2):
    """Start ``world_size`` ranks of the worker; their (exit status, stderr) once all exited."""
    return run_ranks([str(WORKER), mode, str(data), str(out_dir)], world_size, TIMEOUT)


def _rank_result(out_dir, rank):
    with np.load(Path(out_dir) / f"rank{rank}.npz") as saved:
        return {key: saved[key] for key in saved.files}


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("start, stop", [(0, 50), (500, 525), (7, 8), (0, 3)])
def test_shares_are_disjoint_and_cover_the_batch(world_size, start, stop):
    shares = []
    for rank in range(world_size):
        group = _ProcessGroup()
        group.rank, group.world_size = rank, world_size
        shares.append(group.share(start, stop))
    assert shares[0][0] == start and shares[-1][1] == stop
    for (_, hi), (lo, _) in zip(shares, shares[1:], strict=False):
        assert hi == lo  # consecutive, so disjoint and without gaps
    sizes = [hi - lo for lo, hi in shares]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("mode", ["fit", "partial_fit"])
def test_two_processes_equal_one_process(mode, data_file, tmp_path):
    results = _run_ranks(mode, data_file, tmp_path)
    for status, stderr in results:
        assert status == 0, stderr
    rank0, rank1 = _rank_result(tmp_path, 0), _rank_result(tmp_path, 1)
    # Every rank publishes the same model, bit for bit (they take identical steps).
    for key in ("components", "intercept", "loss_curve", "n_steps", "n_dead"):
        np.testing.assert_array_equal(rank0[key], rank1[key])
    # Each rank read its own half of every epoch: 525 rows are 10 batches of 50 (25 + 25)
    # and one of 25 (13 + 12); partial_fit's second call has 120 rows (2 x 25 + 2 x 10).
    expected = {"fit": ([263] * 3, [262] * 3), "partial_fit": ([263, 60], [262, 60])}[mode]
    assert (rank0["rows_read"].tolist(), rank1["rows_read"].tolist()) == expected

    X = np.load(data_file, mmap_mode="r")
    one = MatchingPursuitSAE(**PARAMS)
    if mode == "fit":
        one.fit(X)
    else:
        one.partial_fit(X).partial_fit(X[:120])
    # The same global batches in the same order, so the same model up to rounding: a batch's
    # gradient is summed as two halves added across ranks instead of in one pass, which
    # changes the last bits (about 1e-16 relative in float64) and nothing else; the pursuit
    # made the same selections, so the differences stay at rounding level (1e-12 leaves room
    # for their growth over the 33 Adam steps).
    np.testing.assert_allclose(rank0["components"], one.components_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rank0["intercept"], one.intercept_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rank0["loss_curve"], one.loss_curve_, rtol=1e-12)
    assert int(rank0["n_steps"]) == one.n_steps_
    assert int(rank0["n_dead"]) == one.n_dead_components_


def message_of(mode):
    if mode == "different-data":
        return "needs the same X on every rank"
    return "injected failure"


@pytest.mark.parametrize(
    "mode, message",
    [
        # Inside a step the failure is agreed through the step's all-reduce: the other rank
        # raises too, with a message naming the cause.
        ("raise-in-step", "other process(es) of the process group failed"),
        # Between steps the failing process exits; the peer's next collective fails.
        ("raise-in-callback", None),
        # Ranks given different data refuse it together.
        ("different-data", "the ranks got between 500 and 525 rows"),
    ],
)
def test_a_failing_rank_stops_every_rank(mode, message, data_file, tmp_path):
    tic = time.monotonic()
    (status0, stderr0), (status1, stderr1) = _run_ranks(mode, data_file, tmp_path)
    elapsed = time.monotonic() - tic
    assert status1 != 0 and message_of(mode) in stderr1, stderr1
    assert status0 != 0, stderr0
    if message is not None:
        assert message in stderr0, stderr0
    assert elapsed < TIMEOUT / 2  # far below the process group's 300 s timeout: no hang
    assert not (tmp_path / "rank0.npz").exists() and not (tmp_path / "rank1.npz").exists()


FIT_ARGS = [
    "--n-components",
    "16",
    "--k",
    "3",
    "--max-iter",
    "3",
    "--batch-size",
    "50",
    "--random-state",
    "0",
    "--device",
    "cpu",
    "-q",
]


def _cli(*args, timeout=TIMEOUT):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skmpsae", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # the launcher and its workers share the session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stdout, stderr


def test_cli_nproc_per_node_equals_one_process(data_file, tmp_path):
    status, stdout, stderr = _cli(
        "fit",
        str(data_file),
        *FIT_ARGS,
        "--nproc-per-node",
        "2",
        "-o",
        str(tmp_path / "two.joblib"),
    )
    assert status == 0, stderr
    assert stdout.count("saved to") == 1, stdout  # only rank 0 reports and writes
    two = joblib.load(tmp_path / "two.joblib")
    one = MatchingPursuitSAE(**PARAMS).fit(np.load(data_file, mmap_mode="r"))
    np.testing.assert_allclose(two.components_, one.components_, rtol=0, atol=1e-12)
    assert two.n_steps_ == one.n_steps_
    assert not any(path.name.endswith(".tmp") for path in tmp_path.iterdir())


def test_cli_failing_workers_give_one_error(data_file, tmp_path):
    # A --resume without a checkpoint fails in every worker; the launcher stops them all and
    # the command exits 1 with a line naming the failure.
    status, _, stderr = _cli(
        "fit",
        str(data_file),
        *FIT_ARGS,
        "--nproc-per-node",
        "2",
        "--checkpoint-dir",
        str(tmp_path / "none"),
        "--resume",
        "-o",
        str(tmp_path / "m.joblib"),
    )
    assert status == 1
    assert "no such checkpoint directory" in stderr
    assert "skmpsae fit: error: worker rank" in stderr.strip().splitlines()[-1]
    assert not (tmp_path / "m.joblib").exists()
