"""Does ``torch.compile`` pay for matching pursuit's step? (issue 29, "fused kernels")

After its first correlation GEMM, MP's ``transform`` spends its time in k - 1 steps over each
chunk of rows: ``corr -= values[:, None] * G[indices]`` (one Gram row per row of the chunk),
then the best atom of every row. Eager torch makes two passes over the correlations (the
update, then the blocked argmax); a kernel that fuses them would make one. This script times,
on the same chunks and the same selections:

* ``eager``: the library's step (``_FullGram.update`` then ``_BlockArgmax``), as ``transform``
  runs it;
* ``compiled update + block max``: ``torch.compile`` (inductor) of the in-place update fused
  with the value-only maxima of the argmax's 64-atom blocks, the rest of the argmax eager;
* ``compiled step``: ``torch.compile`` of the whole step (update, then ``max`` with indices).

Each compiled function is compiled once (``dynamic=False``: every chunk has the same shape),
into an empty cache, and the first call's seconds, which include importing ``torch._dynamo``
for the first one, are reported beside the steady time of a transform's steps (2,048 rows,
k=32). Every variant must
select the eager step's atoms. Random unit atoms, d=768, float32.

Writes the table ``compile-step`` of ``docs/performance.md`` (``--no-write`` only prints it).
Run: ``.venv/bin/python benchmarks/bench_compile.py`` (about 3 minutes with one thread, most
of it compiling).
"""

import os
import tempfile
import time

# A cache of its own, so that the first call compiles from nothing, as in a user's first
# process (inductor keeps compiled kernels in /tmp between processes).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="skmpsae-inductor-")

import numpy as np
import torch
from _common import cpu_model, limit_threads, markdown_table, parser, write_table

from skmpsae._pursuit.gram import _ARGMAX_BLOCK, _BlockArgmax, _chunk_rows, _FullGram

N_ROWS, N_FEATURES, K = 2048, 768, 32


def _steps(step, corr0, chunk):
    """Run k - 1 steps of ``step`` over every chunk; the atoms selected, (rows, k)."""
    picked = []
    for start in range(0, corr0.shape[0], chunk):
        corr = corr0[start : start + chunk].clone()
        values, indices = corr.max(1)
        chosen = [indices]
        for _ in range(K - 1):
            corr, values, indices = step(corr, indices, values)
            chosen.append(indices)
        picked.append(torch.stack(chosen, 1))
    return torch.cat(picked)


def _variants(gram, chunk):
    """name -> step function ``(corr, indices, values) -> (corr, values, indices)``."""
    n_components = gram.shape[0]
    source = _FullGram(None, chunk, gram)
    argmax = _BlockArgmax(n_components, signed=False, device=gram.device)

    def eager(corr, indices, values):
        source.update(corr, indices, values)
        values, indices = argmax(corr)
        return corr, values, indices

    def update_block_max(corr, indices, values):
        corr.sub_(values[:, None] * gram[indices])
        return corr.unflatten(1, (-1, _ARGMAX_BLOCK)).amax(2)

    fused = torch.compile(update_block_max, dynamic=False)
    offsets = torch.arange(_ARGMAX_BLOCK, device=gram.device)

    def compiled_update(corr, indices, values):
        columns = fused(corr, indices, values).argmax(1)[:, None] * _ARGMAX_BLOCK + offsets
        values, offset = corr.gather(1, columns).max(1, keepdim=True)
        return corr, values.squeeze(1), columns.gather(1, offset).squeeze(1)

    def whole_step(corr, indices, values):
        corr = corr - values[:, None] * gram[indices]
        values, indices = corr.max(1)
        return corr, values, indices

    return {
        "eager (the library's step)": eager,
        "compiled update + block max": compiled_update,
        "compiled step": torch.compile(whole_step, dynamic=False),
    }


def measure(n_components, repeats, seed=0):
    generator = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_components, N_FEATURES, generator=generator)
    atoms /= atoms.norm(dim=1, keepdim=True)
    X = torch.randn(N_ROWS, N_FEATURES, generator=generator)
    X += 0.3 * torch.randn(1, N_FEATURES, generator=generator)  # a shared direction, as in
    gram = atoms @ atoms.T  # activations, so that rows select some atoms more than others
    corr0 = X @ atoms.T
    chunk = _chunk_rows(n_components, 4, torch.device("cpu"))
    rows, reference = [], None
    for name, step in _variants(gram, chunk).items():
        tic = time.perf_counter()
        picked = _steps(step, corr0, chunk)  # the first call compiles
        first = time.perf_counter() - tic
        steady = []
        for _ in range(repeats):
            tic = time.perf_counter()
            _steps(step, corr0, chunk)
            steady.append(time.perf_counter() - tic)
        if reference is None:
            reference = picked
        rows.append(
            {
                "atoms": n_components,
                "variant": name,
                "first": first,
                "steady": min(steady),
                "same": float((picked == reference).all(1).float().mean()),
            }
        )
        print(rows[-1], flush=True)
    eager = rows[0]["steady"]
    for row in rows:
        row["ratio"] = row["steady"] / eager
    return rows


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    args = p.parse_args(argv)
    limit_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = [row for n_components in args.sizes for row in measure(n_components, args.repeats)]
    caption = (
        f"{cpu_model()}, {args.threads} torch thread(s), torch {torch.__version__}; {N_ROWS} rows, "
        f"d={N_FEATURES}, k={K}, the library's row chunks; the steps after the first "
        f"correlation GEMM, best of {args.repeats}. First call: compiling included (and, for "
        "the first compiled variant, importing torch._dynamo). Load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores."
    )
    table = (
        caption
        + "\n\n"
        + markdown_table(
            rows,
            [
                ("atoms", "atoms", ""),
                ("variant", "step", ""),
                ("steady", "steps (s)", ".3f"),
                ("ratio", "/ eager", ".2f"),
                ("first", "first call (s)", ".1f"),
                ("same", "rows with eager's atoms", ".2%"),
            ],
        )
    )
    print(table)
    if not args.no_write:
        write_table("compile-step", table, page="performance.md")
    return np.array([row["ratio"] for row in rows])


if __name__ == "__main__":
    main()
