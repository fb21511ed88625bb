"""The tables in the docs are written by the benchmark scripts: every marked table has a script
that writes it, and the helpers that aggregate seeds and replace a table do what they say."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import _common  # noqa: E402


def _written_names():
    """Table names passed to write_table by the scripts; f-string fields become a wildcard."""
    names = []
    for script in (REPO / "benchmarks").glob("bench_*.py"):
        for literal in re.findall(r'write_table\(\s*f?"([^"]+)"', script.read_text()):
            names.append(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(literal)))
    return names


def test_every_marked_table_has_a_script_that_writes_it():
    patterns = _written_names()
    marked = []
    for page in (REPO / "docs").glob("*.md"):
        text = page.read_text()
        for name in re.findall(r"<!-- begin table (\S+) -->", text):
            assert text.count(f"<!-- end table {name} -->") == 1, (page.name, name)
            marked.append(name)
    assert "mnist" in marked and "activations" in marked
    for name in marked:
        assert any(re.fullmatch(p, name) for p in patterns), f"no script writes table {name!r}"


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
