"""Sphinx configuration of the skmpsae documentation.

``make docs`` builds the user guide, the API reference (numpydoc) and the example gallery
*without running the examples*; set ``SKMPSAE_DOCS_RUN_GALLERY=1`` to execute them and embed
their figures (a few minutes on 2 cores).
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
# The package is normally installed (editable) in the environment; this keeps a plain checkout
# buildable too.
sys.path.insert(0, str(REPO))

import skmpsae

project = "skmpsae"
author = "skmpsae developers"
copyright = "skmpsae developers, BSD-3-Clause"
release = skmpsae.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    # The benchmark reports are Markdown so that they read well on a repository page too.
    "myst_parser",
]

templates_path = []
exclude_patterns = ["_build", "**.ipynb_checkpoints", "memory_table.rst"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
html_theme = "alabaster"
html_static_path = []
html_title = f"skmpsae {release}"

autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "inherited-members": True,
    # scikit-learn's own machinery; their docstrings point into scikit-learn's documentation.
    "exclude-members": "set_output, get_metadata_routing",
}
# numpydoc lists the methods itself; autosummary's member tables would list them twice.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Cross-references such as "array-like" or "{array-like, sparse matrix}" are plain text.
numpydoc_xref_param_type = False

run_gallery = os.environ.get("SKMPSAE_DOCS_RUN_GALLERY", "0").lower() in ("1", "true", "yes")
sphinx_gallery_conf = {
    "examples_dirs": str(REPO / "examples"),
    "gallery_dirs": "auto_examples",
    # Only files named plot_*.py are executed (when the gallery runs at all); the others are
    # rendered as code only.
    "filename_pattern": r"/plot_",
    "plot_gallery": "True" if run_gallery else "False",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
}
