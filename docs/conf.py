"""Sphinx configuration for the attnspec documentation.

The docs build offline (no intersphinx) with ``sphinx-build -W -n``: every
warning fails the build and every cross-reference must resolve. The local
extensions in ``_ext/`` anchor and link the clause IDs (``clausedoc``), draw
the figures from the code (``figures``), fail the build when a public object
has no documentation (``apicheck``) and run docstring examples with their
module's globals (``moduleglobals``), and link every citation of a paper to
the references and the first use of a term to the glossary (``citations``);
``measured`` shows what ``attnspec check`` prints, run when the docs are built.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version as _version
from pathlib import Path

from sphinx.util.inspect import TypeAliasForwardRef

project = "attnspec"
author = "attnspec maintainers"
copyright = "the attnspec maintainers"
release = _version("attnspec")
version = ".".join(release.split(".")[:2])

sys.path.insert(0, str(Path(__file__).parent / "_ext"))
# The Keras adapter of the oracle (documented in the API reference) needs Keras'
# PyTorch backend, chosen before Keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    # Serves MathJax from the built site (_static/mathjax) instead of a CDN, so that the
    # formulas render offline; it sets mathjax_path. See tests/test_docs_offline.py.
    "sphinx-mathjax-offline",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "apicheck",
    "citations",
    "clausedoc",
    "figures",
    # measured: what `attnspec check` prints, run when the docs are built
    "measured",
    "moduleglobals",
]

# _generated holds the figures that _ext/figures.py draws at build time.
exclude_patterns = ["_build", "_generated"]
nitpicky = True

# autodoc: the docstrings are the normative text; hints go beside the parameters.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# The spec's type aliases (attnspec.typing), kept by name instead of expanded.
_ALIASES = ("Array", "BoolArray", "CausalAlignment", "Mask", "Scale", "ScoreKind")
autodoc_type_aliases = {name: f"~attnspec.typing.{name}" for name in _ALIASES}


def _alias_name(self: TypeAliasForwardRef) -> str:
    return self.name


# Workaround for sphinx-doc/sphinx#14003: an alias inside a union (``Scale | None``) is
# rendered by its repr, "TypeAliasForwardRef('...')", instead of its name.
TypeAliasForwardRef.__repr__ = _alias_name  # type: ignore[method-assign]

# napoleon: NumPy-style sections only; type names written in a docstring are linked too.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_preprocess_types = True
# attnspec.clauses appends these sections to every stub's docstring.
napoleon_custom_sections = ["Clauses", "Special cases", "Errors"]
napoleon_type_aliases = autodoc_type_aliases

# The type of an Attributes entry comes from the docstring only: napoleon's type parser
# mangles annotations such as Literal["rule", ...] and ``str | None``.
napoleon_attr_annotations = False

# Targets that cannot resolve without intersphinx (the build is offline): names in
# third-party packages and in the standard library that annotations and docstrings
# mention. Keep this short.
nitpick_ignore_regex = [
    # Private names (a leading underscore, such as the type variables of
    # attnspec.clauses.specifies or the module attnref._checks) and what is in them
    # (attnref._inputs.mask) have no page of their own.
    ("py:(class|func|data)", r"~?([\w.]+\.)?_\w+(\.\w+)*"),
    ("py:mod", r"([\w.]+\.)?_\w+"),
    # Third-party packages.
    ("py:(class|mod)", r"(numpy|torch|hypothesis)(\.\w+)*"),
    # The standard library.
    ("py:class", r"(collections\.abc|argparse|pathlib|random)\.\w+"),
]

# apicheck: every name in the __all__ of a public module of these packages has a page.
apicheck_packages = ("attnspec", "attnref")

# doctest: the tutorial's examples print arrays with four decimals.
doctest_global_setup = """
import numpy as np
np.set_printoptions(precision=4, suppress=True)
"""

html_theme = "furo"
html_title = f"attnspec {release}"
html_static_path = ["_static"]
html_css_files = ["clauses.css"]
