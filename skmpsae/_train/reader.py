"""Feeding the training loop: the order rows are visited in, and batches read ahead.

An epoch over an array in memory visits its rows in a uniformly random order. Over a
memory-mapped file that may be larger than RAM (1 GiB or more), a uniform order reads every
batch from all over the file: each row costs a random read (and the kernel's read-ahead around
it), and the page cache holds nothing worth keeping. SAE libraries read activations through a
*mixing buffer* instead; here the order is built the same way: the file is cut into blocks of
``_BLOCK_ROWS`` contiguous rows, the blocks are visited in a random order, and the rows of each
run of ``_BUFFER_BLOCKS`` consecutive blocks (the buffer) are shuffled together. Every batch
then reads rows of one buffer, whose blocks are contiguous on disk, and each block is read once
per epoch. The order is still a permutation of the rows, so checkpoints store it as before.

While a training step runs, a background thread reads and converts the next batch (numpy's
copies and torch's kernels release the GIL), so that the disk is not on the step's path.
"""

import mmap
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Rows per contiguous block read from a memory-mapped file (3 MB at 768 float32 features).
_BLOCK_ROWS = 1024
# Blocks per mixing buffer: rows are shuffled among 64 * 1,024 = 65,536 rows (200 MB at 768
# float32 features, held by the page cache, not by the process).
_BUFFER_BLOCKS = 64
# Smaller files are visited in a uniform order, as arrays in memory are (and train exactly
# alike): the page cache holds them after the first epoch, so random rows cost no disk reads.
_BUFFERED_MIN_BYTES = 1 << 30


def _prefers_buffer(X):
    """Whether ``X`` is a view of a memory-mapped file (a ``numpy.memmap`` or a view of one)
    of at least ``_BUFFERED_MIN_BYTES``."""
    if X.nbytes < _BUFFERED_MIN_BYTES:
        return False
    base = X
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def _epoch_order(n, rng, buffered):
    """The rows of an epoch in visiting order: uniformly shuffled, or ``buffered`` as the
    module docstring describes (for memory-mapped data)."""
    if not buffered or n <= _BLOCK_ROWS * _BUFFER_BLOCKS:
        return rng.permutation(n)
    n_blocks = -(-n // _BLOCK_ROWS)
    order = []
    blocks = rng.permutation(n_blocks)
    for first in range(0, n_blocks, _BUFFER_BLOCKS):
        rows = np.concatenate(
            [
                np.arange(b * _BLOCK_ROWS, min((b + 1) * _BLOCK_ROWS, n))
                for b in blocks[first : first + _BUFFER_BLOCKS]
            ]
        )
        order.append(rows[rng.permutation(rows.shape[0])])
    return np.concatenate(order)


def _read_ahead(load, keys):
    """Yield ``(key, load(key))`` for each of ``keys``, loading the next one on a background
    thread while the caller works on the current one. An error in ``load`` is raised where
    its result is taken; the thread is joined when the generator closes."""
    keys = list(keys)
    if not keys:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skmpsae-read") as pool:
        pending = pool.submit(load, keys[0])
        try:
            for i, key in enumerate(keys):
                value = pending.result()
                if i + 1 < len(keys):
                    pending = pool.submit(load, keys[i + 1])
                yield key, value
        finally:
            pending.cancel()
