"""The tables in the docs are written by the benchmark scripts: every marked table (Markdown or
reStructuredText) has a script that writes it into its page, the helpers that aggregate seeds
and replace a table do what they say, and each script's tables, built from made-up
measurements, land between their markers."""

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import _common  # noqa: E402

# The line that opens a generated table, by page type (see _common.write_table).
BEGIN_LINE = {".md": r"<!-- begin table (\S+) -->", ".rst": r"\.\. begin table (\S+)"}


def _writers():
    """``(name pattern, page)`` of every ``write_table`` call in the scripts, read from their
    source: an f-string's fields become a wildcard, a missing ``page`` the default one."""
    writers = []
    for script in (REPO / "benchmarks").glob("bench_*.py"):
        for call in ast.walk(ast.parse(script.read_text())):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "write_table"):
                continue
            name = call.args[0]
            parts = name.values if isinstance(name, ast.JoinedStr) else [name]
            pattern = "".join(
                re.escape(p.value) if isinstance(p, ast.Constant) else ".+" for p in parts
            )
            pages = [k.value.value for k in call.keywords if k.arg == "page"]
            writers.append((pattern, pages[0] if pages else "benchmarks.md"))
    return writers


def _marked_tables():
    """``(name, page)`` of every table between markers in docs/*.md and docs/*.rst."""
    marked = []
    for page in sorted((REPO / "docs").glob("*.md")) + sorted((REPO / "docs").glob("*.rst")):
        lines = [line.rstrip() for line in page.read_text().splitlines()]
        begin_line = BEGIN_LINE[page.suffix]
        for name in (m[1] for line in lines if (m := re.fullmatch(begin_line, line))):
            begin, end = _common.table_markers(name, page.name)
            assert lines.count(begin) == 1 and lines.count(end) == 1, (page.name, name)
            assert lines.index(begin) < lines.index(end), (page.name, name)
            marked.append((name, page.name))
    return marked


def test_every_marked_table_has_a_script_that_writes_it():
    writers = _writers()
    marked = _marked_tables()
    assert ("mnist", "benchmarks.md") in marked and ("activations", "benchmarks.md") in marked
    for name, page in marked:
        assert any(re.fullmatch(pattern, name) and page == to for pattern, to in writers), (
            f"no script writes table {name!r} into {page}"
        )


def test_the_measured_pages_have_generated_tables():
    pages = {page for _, page in _marked_tables()}
    assert {"benchmarks.md", "performance.md", "distributed.md", "memory_table.rst"} <= pages


def test_the_list_of_commands_names_every_generated_table():
    text = (REPO / "docs" / "benchmarks.md").read_text()
    commands = text[text.index("## Reproducing: which command writes which table") :]
    for name, page in _marked_tables():
        assert f"`{name}`" in commands, f"{page}: table {name!r} is missing from the list"


def test_write_table_replaces_only_between_its_markers(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "DOCS", tmp_path)
    monkeypatch.setattr(_common, "REPO", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- begin table t -->\nold\n<!-- end table t -->\noutro\n")
    _common.write_table("t", "| a |\n|---|\n| 1 |\n", page="page.md")
    assert page.read_text() == (
        "intro\n<!-- begin table t -->\n| a |\n|---|\n| 1 |\n<!-- end table t -->\noutro\n"
    )
    with pytest.raises(RuntimeError, match="must contain the markers"):
        _common.write_table("missing", "x", page="page.md")


def test_write_table_in_rst_uses_comment_markers_set_off_by_blank_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "DOCS", tmp_path)
    monkeypatch.setattr(_common, "REPO", tmp_path)
    page = tmp_path / "page.rst"
    page.write_text(
        "intro\n\n.. begin table t\n\nold\n\n.. end table t\n\n"
        ".. begin table t-goal\n\n.. end table t-goal\n\noutro\n"
    )
    _common.write_table("t", "new\n", page="page.rst")
    assert page.read_text() == (
        "intro\n\n.. begin table t\n\nnew\n\n.. end table t\n\n"
        ".. begin table t-goal\n\n.. end table t-goal\n\noutro\n"
    )
    # The HTML markers of a Markdown page are not the markers of an rst page.
    page.write_text("<!-- begin table t -->\nold\n<!-- end table t -->\n")
    with pytest.raises(RuntimeError, match="must contain the markers"):
        _common.write_table("t", "x", page="page.rst")


def test_rst_table_is_a_list_table_of_the_markdown_columns():
    rows = [{"case": "``fit``", "mib": 418.4, "s": None}]
    columns = [("case", "case", ""), ("mib", "peak (MiB)", ".0f"), ("s", "time (s)", ".1f")]
    assert _common.rst_table(rows, columns, widths=(50, 25, 25)).splitlines() == [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 50 25 25",
        "",
        "   * - case",
        "     - peak (MiB)",
        "     - time (s)",
        "   * - ``fit``",
        "     - 418",
        "     - -",
    ]
    # As docutils (hence Sphinx) reads it between the markers: two comments and the table.
    core = pytest.importorskip("docutils.core")
    nodes = pytest.importorskip("docutils.nodes")
    tree = core.publish_doctree(
        ".. begin table t\n\n" + _common.rst_table(rows, columns) + "\n\n.. end table t\n",
        settings_overrides={"report_level": 2, "halt_level": 2},
    )
    assert [type(node) for node in tree.children] == [nodes.comment, nodes.table, nodes.comment]


def test_aggregate_gives_mean_and_sample_sd_over_seeds():
    rows = [{"model": "a", "k": 4, "r2": r, "note": "n"} for r in (0.5, 0.6, 0.7)]
    rows.append({"model": "b", "k": 4, "r2": 0.9})
    merged = {r["model"]: r for r in _common.aggregate(rows, ["model", "k"])}
    assert merged["a"]["n_runs"] == 3 and merged["a"]["note"] == "n" and merged["a"]["k"] == 4
    assert merged["a"]["r2"].mean == pytest.approx(0.6)
    assert merged["a"]["r2"].sd == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    table = _common.markdown_table(list(merged.values()), [("model", "m", ""), ("r2", "R2", ".2f")])
    assert "| a | 0.60 ± 0.10 |" in table
    assert "| b | 0.90 |" in table  # one run: no spread to show


# -- each script's tables, built from made-up measurements --------------------------------------
# The benchmarks take minutes; these check what they write, and where, in milliseconds.


def _written(tmp_path, monkeypatch, page, tables):
    """Write ``tables`` (name: text) into a copy of ``docs/<page>``; return the new page."""
    (tmp_path / page).write_text((REPO / "docs" / page).read_text())
    monkeypatch.setattr(_common, "DOCS", tmp_path)
    monkeypatch.setattr(_common, "REPO", tmp_path)
    for name, text in tables.items():
        _common.write_table(name, text, page=page)
    return (tmp_path / page).read_text()


def test_bench_memory_writes_the_user_guide_table(tmp_path, monkeypatch):
    import bench_memory

    runs = {
        case: [
            {
                "case": case,
                "peak_anon": 400.0 + extra,
                "above_baseline": 190.0 + extra,
                "vm_hwm": 2000.0,
                "seconds": 30.0 + extra,
            }
            for extra in (0.0, 5.0)
        ]
        for case in bench_memory.CASES
    }
    setup = {
        "n_samples": 1000,
        "n_features": 8,
        "size_mb": 0.03,
        "batch_size": 100,
        "n_components": 4,
        "threads": 1,
        "repeats": 2,
    }
    text = bench_memory.guide_table(bench_memory.summarise(runs), setup)
    assert "differed by at most 5 MiB" in text and "imported holds 210 MiB" in text
    page = _written(tmp_path, monkeypatch, "memory_table.rst", {"memory": text})
    assert '   * - ``fit`` on ``np.load(path, mmap_mode="r")``\n     - 405\n     - 195\n' in page


def test_bench_distributed_writes_the_epoch_and_checkpoint_tables(tmp_path, monkeypatch):
    import bench_distributed as bench

    runs = {
        variant: [{"seconds": seconds, "steps": 10, "loss": 0.5} for seconds in (best, 9.0)]
        for variant, best in zip(bench.VARIANTS, (2.0, 4.0), strict=True)
    }
    epochs = bench.epoch_table(runs, n_rows=2560, repeats=2)
    assert "| 2 processes x 1 thread (gloo) | 4.0 | 400 | 2.0 | 4.0, 9.0 | 0.50000 |" in epochs
    checkpoint = bench.checkpoint_table(seconds=0.05, size=2**20, step=0.5)
    assert checkpoint.endswith("| 50 | 1.0 | 500 | 0.01% | 10% |")
    page = _written(
        tmp_path,
        monkeypatch,
        "distributed.md",
        {"distributed": epochs, "distributed-checkpoint": checkpoint},
    )
    assert epochs in page and checkpoint in page


def test_bench_encode_writes_its_goal_and_tables(tmp_path, monkeypatch):
    import bench_encode as bench

    rows = [
        {"name": name, "seconds": seconds, "same": 1.0, "diff": 0.0}
        for name, seconds in (("gram", 1.0), ("gram+G", 2.0), ("one_gemm", 10.0), ("naive", 30.0))
    ]
    goal = bench.goal_summary(rows)
    assert "**30.0x** with the cached Gram matrix (fitted estimator), 15.0x when" in goal
    assert "| 10.0x (5.0x with `D D^T` in the call) | (reported) |" in goal
    assert goal.count("| yes |") == 1
    assert "| no |" in bench.goal_summary([{**rows[0], "same": 0.99}, *rows[1:]])  # not same codes
    chunks = [
        {"rows": rows_, "mb": rows_ / 64, "seconds": seconds, "default_rows": 256}
        for rows_, seconds in ((256, 0.8), (512, 0.6), (2048, 1.0))
    ]
    chunks = bench.chunk_table(chunks, repeats=3)
    assert chunks.endswith(
        "Fastest: 512 rows per chunk (8.00 MB of correlations), 40% less "
        "time than one block of all 2048 rows."
    )
    scaling = bench.scaling_tables(
        [{"features": "784", "K": 512, "gemm": 0.01, "per_step": 2e-3}],
        [{"k": 4, "gram": 0.2, "one_gemm": 0.8}],
    )
    assert "| 784 | 512 | 0.010 | 2.00 |" in scaling and "| 4 | 0.200 | 0.800 | 4.0 |" in scaling
    tables = {
        "encode-goal": goal,
        "encode": bench.main_table(rows, repeats=3),
        "encode-chunks": chunks,
        "encode-scaling": scaling,
    }
    page = _written(tmp_path, monkeypatch, "performance.md", tables)
    assert all(text in page for text in tables.values())


def test_bench_train_writes_its_goal_and_table(tmp_path, monkeypatch):
    import bench_train as bench

    def runs(*pairs):
        return [
            {"seconds": s, "extra_mb": mb, "peak_mb": mb + 100, "loss": 0.01} for s, mb in pairs
        ]

    rows = bench.summarise(
        {"gram": runs((2.0, 100), (1.0, 120)), "naive": runs((20.0, 500), (30.0, 400))}
    )
    goal = bench.goal_summary(rows)
    assert (
        "| **20.0x** faster (1.0 s against 20.0 s), **4.0x** less peak memory (+100 MB "
        "against +400 MB) | yes |"
    ) in goal
    table = bench.epoch_table(rows, threads=1, repeats=2)
    naive = "| naive unrolled loop under autograd | 20.00 | 1.0 | 400 | 1.0 | 500 | 0.01000 |"
    assert naive in table
    assert "naive unrolled loop under autograd: 20.00 s (+500 MB), 30.00 s (+400 MB)." in table
    page = _written(tmp_path, monkeypatch, "performance.md", {"train-goal": goal, "train": table})
    assert goal in page and table in page


def test_bench_omp_writes_its_goal_and_table(tmp_path, monkeypatch):
    import bench_omp as bench

    rows = bench.summarise({"skmpsae": [1.0, 3.0, 2.0], "sklearn": [12.0, 15.0, 40.0]})
    codes = {"same": 1.0, "difference": 2e-5, "largest": 7.0}
    goal = bench.goal_summary(rows, codes)
    assert "| **12.0x**; same support on 100.00% of rows, codes within 2.0e-05 | yes |" in goal
    assert "| no |" in bench.goal_summary(rows, {**codes, "same": 0.5})
    table = bench.omp_table(rows, codes, threads=1, repeats=3)
    assert "(batched, torch) | 1.00 | 0.100 | 12.0 | 1.0-3.0 |" in table
    page = _written(tmp_path, monkeypatch, "performance.md", {"omp-goal": goal, "omp": table})
    assert goal in page and table in page


def test_bench_selection_writes_its_table(tmp_path, monkeypatch):
    import bench_selection as bench

    table = bench.sweep_table(
        [
            {
                "K": 1024,
                "gram": 0.3,
                "rows": 0.4,
                "gemm": 1.2,
                "cost_model": 0.3,
                "model_path": "gram",
                "timed": "-",
                "auto_path": "gram",
                "auto": 0.3,
                "measuring": 0.0,
                "later": 0.3,
                "distinct": 1000,
            },
            {
                "K": 65536,
                "rows": 150.0,
                "gemm": 120.0,
                "cost_model": 150.0,
                "model_path": "rows",
                "timed": "gemm/rows",
                "auto_path": "gemm",
                "auto": 195.0,
                "measuring": 75.0,
                "later": 120.0,
                "distinct": 25000,
            },  # no whole-Gram run at this size
        ],
        threads=1,
    )
    forced = "| 1024 | 0.30 | 0.40 | 1.20 | 0.30 | gram |"
    assert forced + " - | gram | 0.30 | 0.00 | 0.30 | 1.00 | 1000 |" in table
    forced = "| 65536 | - | 150.00 | 120.00 | 150.00 | rows |"
    assert forced + " gemm/rows | gemm | 195.00 | 75.00 | 120.00 | 1.25 | 25000 |" in table
    assert table in _written(tmp_path, monkeypatch, "performance.md", {"selection": table})


def test_bench_large_writes_each_part_and_its_goal(tmp_path, monkeypatch):
    import bench_large as bench

    mb, gb = 2**20, 2**30
    epoch = {
        "gemm_rate": 1e11,
        "baseline": mb,
        "seconds": 600.0,
        "distinct": [1000, 2000],
        "batch_size": 4096,
        "loss": 0.5,
        "rss_file": 10 * mb,
        "vm_hwm": 3000 * mb,
        "peak_anon": 2049 * mb,
        "read_rate": 16670.0,
    }
    table, goal = bench.epoch_tables(epoch, threads=2, load=1.5)
    assert "| epoch | 600.0 s (10.00 min); 167 rows/s |" in table
    assert "| distinct atoms per batch | 1000-2000 |" in table
    assert "| 16670 rows/s (100x the training rate) |" in table
    assert goal.endswith("| **10.00 min** (600 s), peak anonymous memory **+2.0 GB** | no |")
    transform = {
        "baseline": 0,
        "fit_seconds": 1.0,
        "transform_seconds": 2.0,
        "nnz": 10,
        "codes_mb": 0.1,
        "format": "csr",
        "vm_hwm": 3.5 * gb,
        "peak_anon": 3 * gb,
    }
    transform_table, transform_goal = bench.transform_tables(transform, threads=2, load=1.5)
    assert "| 2.0 s (csr, 10 non-zeros, 0.1 MB) |" in transform_table
    assert "| **3.50 GB** (`VmHWM`" in transform_goal and transform_goal.endswith("| yes |")
    read = bench.read_table([(False, 1000.0), (True, 2500.4)], 10, size_gib=0.5, load=1.5)
    assert read.endswith("| 1 | uniform order | 1,000 |\n| 2 | mixing buffer | 2,500 |")
    tables = {
        "large-epoch": table,
        "large-epoch-goal": goal,
        "large-transform": transform_table,
        "large-transform-goal": transform_goal,
        "large-read": read,
    }
    page = _written(tmp_path, monkeypatch, "performance.md", tables)
    assert all(text in page for text in tables.values())


def test_bench_saelens_writes_its_goal_and_table(tmp_path, monkeypatch):
    import bench_saelens as bench

    def row(batch, train_ratio, enc_ratio, bound, same=1.0):
        return {
            "batch": batch,
            "sl_train": 1.0,
            "our_train": 1.0,
            "train_ratio": train_ratio,
            "sl_enc": 1.0,
            "our_enc": 1.0,
            "enc_ratio": enc_ratio,
            "bound": bound,
            "same": same,
            "diff": 1e-6,
        }

    goal = bench.goal_summary(
        [row(1024, 2.7, 14.8, 2.4), row(4096, 6.3, 13.2, 8.0), row(8192, 3.0, 5.0, 9.0, same=0.5)]
    )
    rows = goal.splitlines()[2:]
    assert rows[0].endswith("| encoding yes; training no: the bound is below 4 |")
    assert rows[1].startswith("| ... at batch 4,096 | training **6.3x** (reuse bound 8.0x), ")
    assert rows[1].endswith("| yes |")
    assert rows[2].endswith("| encoding yes; training no; the codes differ |")
    table = bench.comparison_table(
        [row(1024, 2.7, 14.8, 2.4)], gram_seconds=1.5, threads=2, repeats=2
    )
    assert table.endswith("took 1.50s once per fitted model (not in the encode times).")
    page = _written(
        tmp_path, monkeypatch, "performance.md", {"saelens-goal": goal, "saelens": table}
    )
    assert goal in page and table in page


def test_bench_precision_writes_its_table(tmp_path, monkeypatch):
    import bench_precision as bench

    table = bench.precision_table(
        [
            {"K": 256, "dtype": "float32 (None)", "r2": 0.8, "r2_sd": 0.001, "same": None},
            {"K": 256, "dtype": "bfloat16", "r2": 0.79, "r2_sd": 0.002, "same": 0.8},
        ],
        epochs=10,
        seeds=2,
    )
    assert table.endswith(
        "| 256 | float32 (None) | 0.8000 | 0.0010 | - |\n"
        "| 256 | bfloat16 | 0.7900 | 0.0020 | 80.0% |"
    )
    assert table in _written(tmp_path, monkeypatch, "performance.md", {"precision": table})


def test_bench_cost_reads_time_to_a_common_r2_and_writes_its_tables(tmp_path, monkeypatch):
    import bench_cost as bench

    def row(name, epochs, r2_curve, transform):
        return {
            "estimator": name,
            "K": 4096,
            "batch": 256,
            "epoch_first": epochs[0],
            "epoch": min(epochs[1:]),
            "epoch_seconds": epochs,
            "r2_curve": r2_curve,
            "r2": max(r2_curve),
            "transform": transform,
        }

    rows = [
        row("MP", [3.0, 2.0, 2.0], [0.8, 0.9, 0.92], 0.3),
        row("TopK", [2.0, 1.0, 1.0], [0.2, 0.3, 0.4], 0.1),
        row("BatchTopK", [2.0, 2.0, 2.0], [0.1, 0.35, 0.5], 0.1),
        row("Matryoshka", [2.0, 2.0, 2.0], [0.1, 0.2, 0.45], 0.1),
    ]
    # The common R2 is the lowest best (TopK's 0.4): MP reaches it in its first epoch, TopK in
    # its third, BatchTopK and Matryoshka in their third.
    assert bench.time_to_common_r2(rows) == 0.4
    reached = [(r["epochs_to_r2"], r["to_r2"]) for r in rows]
    assert reached == [(1, 3.0), (3, 4.0), (3, 6.0), (3, 6.0)]
    bench.with_ratios(rows)
    mp = rows[0]
    assert (mp["fit_ratio"], mp["fit_first_ratio"], mp["to_r2_ratio"]) == (2.0, 1.5, 0.75)
    assert mp["transform_ratio"] == pytest.approx(3.0)
    # Roofline: 2 n d K flops at 1e9 flop/s, plus (k - 1) n K floats at 1e9 bytes/s.
    mp["roofline"] = bench.roofline(mp, 100, 10, 5, 1e9, 1e9)
    assert mp["roofline"] == pytest.approx(2 * 100 * 10 * 4096 / 1e9 + 4 * 100 * 4096 * 4 / 1e9)
    goal = bench.goal_summary(rows)
    assert "| 4,096 atoms: MP epoch <= 1.5x TopK's (default batches) | 2.00x (2.00 s" in goal
    assert goal.count("| no |") == 2
    table = bench.cost_table(rows, "caption")
    assert "| 4096 | MP | 256 | 2.00 | 2.00 | 3.00 | 1.50 |" in table
    page = _written(tmp_path, monkeypatch, "performance.md", {"cost-goal": goal, "cost": table})
    assert goal in page and table in page


@pytest.mark.parametrize("script", ["bench_cost", "bench_gpu"])
def test_the_cost_and_gpu_benchmarks_run_at_toy_sizes(script, capsys):
    """``--tiny``: every part runs on the CPU in seconds and prints its table, writing nothing."""
    import importlib

    bench = importlib.import_module(script)
    bench.main(["--tiny"])
    out = capsys.readouterr().out
    for name in ("MP", "TopK", "BatchTopK", "Matryoshka"):
        assert f"| {name} |" in out
    assert "wrote table" not in out and "saved" not in out
