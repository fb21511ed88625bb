"""The documentation builds without warnings (API pages and gallery pages, examples not run)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("sphinx_gallery")

REPO = Path(__file__).resolve().parent.parent


def test_docs_build_without_warnings(tmp_path):
    # A copy, so that the generated API stubs and gallery pages never land in the checkout.
    ignore = shutil.ignore_patterns("_build", "generated", "auto_examples", "__pycache__")
    shutil.copytree(REPO / "docs", tmp_path / "docs", ignore=ignore)
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=ignore)
    env = {**os.environ, "SKMPSAE_DOCS_RUN_GALLERY": "0"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "html",
            "-q",
            str(tmp_path / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = tmp_path / "html"
    for page in (
        "index.html",
        "user_guide.html",
        "design.html",
        "api.html",
        "generated/skmpsae.MatchingPursuitSAE.html",
        "auto_examples/index.html",
        "auto_examples/plot_dask_grid_search.html",
    ):
        assert (html / page).is_file(), page
    api_page = (html / "generated" / "skmpsae.MatchingPursuitSAE.html").read_text()
    assert "n_nonzero_coefs" in api_page and "partial_fit" in api_page  # numpydoc rendered
    guide = (html / "user_guide.html").read_text()
    assert "peak anonymous" in guide  # the measured out-of-core memory table is included
