"""Cheap checks of the example gallery and the benchmark runner (nothing is trained here)."""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_gallery_script(path):
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))  # a syntax error fails here
    docstring = ast.get_docstring(tree)
    assert docstring, "sphinx-gallery needs a module docstring"
    # A title block: a line of '=' above and below the title, as sphinx-gallery expects.
    lines = docstring.splitlines()
    assert re.fullmatch(r"=+", lines[0]) and re.fullmatch(r"=+", lines[2]), lines[:3]
    assert len(lines[0]) >= len(lines[1].strip()) and len(lines[2]) >= len(lines[1].strip())
    assert source.count("# %%") >= 2, "split the script into cells with '# %%'"


def test_examples_use_only_public_names():
    for path in EXAMPLES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skmpsae"):
                assert not any(part.startswith("_") for part in node.module.split(".")), path
                assert not any(alias.name.startswith("_") for alias in node.names), path


def test_run_all_lists_every_benchmark():
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == scripts
    assert {
        "bench_mnist.py",
        "bench_adaptive.py",
        "bench_hierarchy.py",
        "bench_activations.py",
    } <= set(out)


def test_markdown_table_formats_rows():
    spec = importlib.util.spec_from_file_location("_common", ROOT / "benchmarks" / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    table = common.markdown_table(
        [{"name": "a", "r2": 0.12345}, {"name": "b", "r2": None}],
        [("name", "model", ""), ("r2", "R2", ".3f")],
    )
    assert table.splitlines() == ["| model | R2 |", "|---|---|", "| a | 0.123 |", "| b | - |"]
