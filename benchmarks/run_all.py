"""Run every ``benchmarks/bench_*.py`` in turn, one at a time, and report how each ended.

Each benchmark runs in its own Python process (a clean torch/BLAS state and thread setting),
with its output streamed as it comes. Extra arguments are passed to every script, e.g.
``python benchmarks/run_all.py --no-plot``; ``--only mnist,adaptive`` picks scripts by name.
A benchmark whose optional dependencies are missing says so and counts as failed; the others
still run. The exit status is 1 if any benchmark failed.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated names, e.g. mnist,adaptive")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args, passthrough = p.parse_known_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
        unknown = wanted - {s.stem.removeprefix("bench_") for s in scripts}
        if unknown:
            p.error(f"no benchmark named {', '.join(sorted(unknown))}")
    if args.list:
        print("\n".join(s.name for s in scripts))
        return 0

    outcomes = []
    for script in scripts:
        print(f"\n===== {script.name} =====", flush=True)
        tic = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script), *passthrough], cwd=HERE.parent)
        outcomes.append((script.name, rc, time.perf_counter() - tic))

    print("\n===== summary =====")
    for name, rc, seconds in outcomes:
        print(f"{name:28s} {'ok' if rc == 0 else f'FAILED (exit {rc})':18s} {seconds:7.0f}s")
    return int(any(rc != 0 for _, rc, _ in outcomes))


if __name__ == "__main__":
    sys.exit(main())
