"""Sphinx configuration of neurosim's documentation site.

Built from the repository root so that the guide pages, the benchmark result tables and
the notebooks link to each other as they do on the forge:

    .venv/bin/sphinx-build -W --keep-going -c docs -b html . docs/_build/html

(``bash scripts/build_docs.sh`` does exactly that). Warnings are errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the gallery imports the examples next to the package
os.environ.setdefault("MPLBACKEND", "Agg")

project = "neurosim"
author = "the neurosim developers"
copyright = "2026, the neurosim developers"  # Sphinx reads this name

root_doc = "docs/index"
include_patterns = [
    "README.md",
    "docs/index.md",
    "docs/*.md",
    "docs/api/index.md",
    "docs/api/generated/*.rst",
    "docs/auto_gallery/*.rst",
    "benchmarks/results/*.md",
    "benchmarks/results/mnist/*.md",
    "examples/notebooks/*.ipynb",
]
exclude_patterns = ["docs/_build/**", "**/.ipynb_checkpoints", "docs/gallery/**"]
# the benchmark result pages are generated reports whose headings skip levels (H1, then H3
# per table); that is their layout, not a broken page
suppress_warnings = ["myst.header"]

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "myst_nb",
]

# ---- API reference: one page per module, from the docstrings
autosummary_generate = True
autosummary_imported_members = False
# a package's page shows its docstring; each name is documented once, in the module defining it
autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource",
                           "ignore-module-all": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
add_module_names = False
# the annotations name types from numpy, torch and pydantic that have no inventory here
nitpicky = False

# ---- Markdown pages and notebooks (MyST); notebooks run at build time
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True

# ---- the gallery: every docs/gallery/plot_*.py runs at build time and shows its figures
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "docs" / "gallery"),
    "gallery_dirs": str(ROOT / "docs" / "auto_gallery"),
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"_paths\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "show_memory": False,
}

html_theme = "furo"
html_title = "neurosim"
html_static_path: list[str] = []
