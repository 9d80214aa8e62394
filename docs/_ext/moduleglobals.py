"""Sphinx extension: run a docstring's examples with its module's globals, as pytest does.

A docstring example such as ``>>> round_to("float16", [0.1])`` may use a name
of its own module without importing it: ``pytest --doctest-modules`` runs it
with the module's globals. Sphinx's doctest builder runs the examples it finds
on a page in the page's own namespace instead, so each autodoc docstring with
examples gets a hidden ``testsetup`` that copies its module's globals into the
namespace of the page's default doctest group.
"""

from __future__ import annotations

import inspect
from typing import Any

from sphinx.application import Sphinx

_SETUP = (
    "import importlib as _importlib",
    "globals().update({{_k: _v for _k, _v in vars(_importlib.import_module({module!r})).items()"
    " if not _k.startswith('__')}})",
)


def _module_of(what: str, name: str, obj: Any) -> str | None:
    if what == "module":
        return name
    module = inspect.getmodule(obj)
    return module.__name__ if module is not None else None


def add_module_globals(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Prepend a hidden ``testsetup`` to a docstring that has doctest examples."""
    if not any(line.lstrip().startswith(">>>") for line in lines):
        return
    module = _module_of(what, name, obj)
    if module is None:
        return
    setup = ["", ".. testsetup:: default", ""]
    setup += [f"   {line.format(module=module)}" for line in _SETUP]
    lines.extend([*setup, ""])


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the docstring hook."""
    # After napoleon (priority 500), so that the directive is not read as part of a section.
    app.connect("autodoc-process-docstring", add_module_globals, priority=700)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
