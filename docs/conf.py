"""Sphinx configuration for the attnspec documentation.

The docs build offline (no intersphinx) with ``sphinx-build -W -n``: every
warning fails the build and every cross-reference must resolve.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from sphinx.util.inspect import TypeAliasForwardRef

project = "attnspec"
author = "attnspec maintainers"
copyright = "the attnspec maintainers"
release = _version("attnspec")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
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

# Targets that cannot resolve without intersphinx (the build is offline). Keep this short.
nitpick_ignore = [
    ("py:class", "collections.abc.Callable"),
    ("py:class", "collections.abc.Iterator"),
    ("py:class", "numpy.bool"),
    ("py:class", "numpy.dtype"),
    ("py:class", "numpy.floating"),
    ("py:class", "numpy.inexact"),
    ("py:class", "numpy.ndarray"),
    ("py:class", "torch.Tensor"),
]
# Private names (a leading underscore, such as the type variables of attnspec.clauses.specifies
# or the module attnref._checks) have no page of their own.
nitpick_ignore_regex = [
    ("py:class", r"~?([\w.]+\.)?_\w+"),
    ("py:mod", r"([\w.]+\.)?_\w+"),
]

html_theme = "furo"
html_title = f"attnspec {release}"
