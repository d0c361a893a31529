"""Sphinx configuration of xbp's documentation site.

Build it from the repository root (the ``docs`` extra installs everything):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The gallery executes ``../examples/plot_*.py`` (sphinx-gallery); the CLI reference is
generated from ``xbp.cli.options.build_parser`` (sphinx-argparse); the API reference from
the numpydoc docstrings (autosummary + numpydoc).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# the gallery runs small networks in this process: one BLAS/torch thread each (on a
# busy 2-core machine the default of one thread per core made steps many times slower)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# the checkout being documented, not an installed copy elsewhere
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import xbp  # noqa: E402
import xbp.cli.options  # noqa: E402

# the commands' epilogs ("examples:" then indented command lines) are plain text for
# --help; the reference shows them as literal blocks, the same lines
for _name, _text in xbp.cli.options.EXAMPLES.items():
    _head, _, _body = _text.partition("\n")
    xbp.cli.options.EXAMPLES[_name] = f"{_head[:-1].capitalize()}::\n\n{_body}"

project = "xbp"
author = "the xbp authors"
copyright = "the xbp authors"
version = release = xbp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinxarg.ext",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "*.json"]
templates_path = ["_templates"]

# -- MyST: the Markdown notes render as they read on GitHub, with $math$ and $$math$$
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# links between the notes are written as file paths (docs/x.md on GitHub): resolve them
myst_links_external_new_tab = False
suppress_warnings = ["myst.xref_missing"] if os.environ.get("XBP_DOCS_LAX") else []

# -- API reference: autosummary writes a page per public name, numpydoc renders it
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
}
# no network in CI: intersphinx would warn on every build without one
if os.environ.get("XBP_DOCS_OFFLINE", "1") == "1":
    intersphinx_mapping = {}

# -- the example gallery: every examples/plot_*.py is executed and its output rendered
EXAMPLES = ROOT / "examples"
# the built-in parts, recorded now, restored around every example
sys.path.insert(0, str(DOCS))
import gallery_reset  # noqa: E402,F401

sphinx_gallery_conf = {
    "examples_dirs": str(EXAMPLES),
    "gallery_dirs": str(DOCS / "auto_examples"),
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib", "gallery_reset.forget_registered_parts"),
    "reset_modules_order": "both",
    "min_reported_time": 1,
}
if not (EXAMPLES / "README.rst").is_file() and not (EXAMPLES / "README.txt").is_file():
    # a checkout without examples/ still builds: the gallery page says where they go
    extensions.remove("sphinx_gallery.gen_gallery")
    exclude_patterns.append("sg_execution_times.rst")  # a gallery build's leftover
    (DOCS / "auto_examples").mkdir(exist_ok=True)
    (DOCS / "auto_examples" / "index.rst").write_text(
        "Examples\n========\n\nThe gallery is built from ``examples/plot_*.py``; "
        "this checkout has none.\n"
    )

# -- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"xbp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
