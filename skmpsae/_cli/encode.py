"""``skmpsae encode``: a ``.npy`` file's codes under a fitted model, as a sparse ``.npz``."""

from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .._train.progress import Progress
from .common import _check_output_dir, _check_suffix, _emit, _positive_int
from .inputs import _model_and_rows

# Rows encoded at a time by `skmpsae encode` (the default of --chunk-size).
_ENCODE_CHUNK = 4096


def add_parser(commands):
    encode = commands.add_parser(
        "encode",
        help="encode a .npy file with a fitted model into a sparse .npz matrix",
        description="Encode DATA.npy chunk by chunk and save the codes as a scipy sparse CSR "
        "matrix (load it with scipy.sparse.load_npz).",
    )
    encode.add_argument(
        "model",
        metavar="MODEL",
        help="a .safetensors or .joblib file written by 'skmpsae fit', or a SAELens directory",
    )
    encode.add_argument("data", metavar="DATA.npy")
    encode.add_argument(
        "-o", "--output", required=True, metavar="CODES.npz", help="written exactly there"
    )
    encode.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=_ENCODE_CHUNK,
        help=f"rows encoded at a time (default: {_ENCODE_CHUNK})",
    )
    encode.add_argument("--device", default=None, help="override the model's device")
    encode.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    encode.set_defaults(subparser=encode, run=run)


def run(args):
    from scipy import sparse

    _check_suffix(
        args.output,
        (".npz",),
        "-o",
        "encode writes a scipy sparse matrix, a .npz file; name it CODES.npz",
    )
    _check_output_dir(args.output, "output codes")
    model, X = _model_and_rows(args, "encode")
    output = Path(args.output)
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float32
    if "sparse_output" in model.get_params():
        # No dense (chunk, n_components) codes: at 65,536 atoms a dense chunk of 4,096 rows
        # is 1 GB. The other models encode a chunk densely anyway.
        model.set_params(sparse_output=True)
    starts = range(0, X.shape[0], args.chunk_size)
    progress = Progress(len(starts), "encode", "chunk", not args.quiet)
    blocks = []
    try:
        for start in starts:
            # Only this chunk is read from the file (and converted, for other dtypes).
            chunk = np.asarray(X[start : start + args.chunk_size], dtype=dtype)
            codes = model.transform(chunk)
            blocks.append(codes if sparse.issparse(codes) else sparse.csr_matrix(codes))
            progress.update()
    finally:
        progress.close()
    codes = sparse.vstack(blocks, format="csr")
    with atomic_write(output) as file:
        sparse.save_npz(file, codes)
    _emit(
        f"encoded {codes.shape[0]} samples into {codes.shape[1]} components, mean L0 "
        f"{codes.nnz / codes.shape[0]:.2f}; saved to {output}"
    )
    return 0
