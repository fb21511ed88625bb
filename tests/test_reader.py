"""The training loop's input: the mixing-buffer order over large memory-mapped files, and the
batches read ahead on a background thread."""

import threading

import numpy as np
import pytest

from skmpsae import MatchingPursuitSAE
from skmpsae._train.reader import (
    _BLOCK_ROWS,
    _BUFFER_BLOCKS,
    _epoch_order,
    _prefers_buffer,
    _read_ahead,
)


def test_buffered_order_is_a_permutation_that_reads_one_buffer_at_a_time():
    partial = 5 * _BLOCK_ROWS * _BUFFER_BLOCKS + 123  # a partial block
    order = _epoch_order(partial, np.random.RandomState(0), buffered=True)
    np.testing.assert_array_equal(np.sort(order), np.arange(partial))
    n = 5 * _BLOCK_ROWS * _BUFFER_BLOCKS + 3 * _BLOCK_ROWS  # a partial last buffer
    order = _epoch_order(n, np.random.RandomState(0), buffered=True)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    buffer_rows = _BLOCK_ROWS * _BUFFER_BLOCKS
    for start in range(0, n, buffer_rows):
        blocks = np.unique(order[start : start + buffer_rows] // _BLOCK_ROWS)
        assert len(blocks) <= _BUFFER_BLOCKS  # each buffer spans its own blocks only
    # Rows are mixed within a buffer: a batch of 4,096 draws from many blocks, not one run.
    assert len(np.unique(order[:4096] // _BLOCK_ROWS)) > _BUFFER_BLOCKS / 2
    # Blocks are visited in a random order, not front to back.
    assert order[:buffer_rows].max() > buffer_rows
    # Unbuffered (and small) inputs: the uniform permutation, as drawn before.
    np.testing.assert_array_equal(
        _epoch_order(n, np.random.RandomState(0), buffered=False),
        np.random.RandomState(0).permutation(n),
    )


def test_only_large_memory_maps_take_the_buffer(tmp_path):
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((100, 4), np.float32))
    assert not _prefers_buffer(np.load(small, mmap_mode="r"))
    big = np.lib.format.open_memmap(
        tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(2**28 + 1, 1)
    )  # sparse file: no disk written
    assert _prefers_buffer(np.load(tmp_path / "big.npy", mmap_mode="r"))
    assert _prefers_buffer(big[1:])  # a view of the map
    assert not _prefers_buffer(np.zeros((2**28 + 1, 1), np.float32)[:10])


def test_read_ahead_keeps_order_overlaps_and_propagates_errors():
    main = threading.get_ident()
    seen = []

    def load(key):
        seen.append(threading.get_ident())
        if key == 3:
            raise KeyError("boom")
        return key * 10

    out = []
    with pytest.raises(KeyError, match="boom"):
        for key, value in _read_ahead(load, range(5)):
            out.append((key, value))
    assert out == [(0, 0), (1, 10), (2, 20)]
    assert main not in seen  # every load ran on the reading thread
    assert not [t for t in threading.enumerate() if t.name.startswith("skmpsae-read")]
    assert list(_read_ahead(load, [])) == []


def test_training_with_read_ahead_is_reproducible():
    X = np.random.RandomState(0).randn(500, 6).astype(np.float32)
    params = {
        "n_components": 12,
        "n_nonzero_coefs": 3,
        "max_iter": 2,
        "batch_size": 64,
        "random_state": 0,
        "device": "cpu",
    }
    a = MatchingPursuitSAE(**params).fit(X)
    b = MatchingPursuitSAE(**params).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert a.n_steps_ == 2 * 8
