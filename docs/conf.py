"""Sphinx configuration for the soxspipe documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from soxspipe import __version__  # noqa: E402

project = "soxspipe"
author = "the soxspipe developers"
release = __version__
version = __version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_mock_imports = ["fundamentals"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
