"""Sphinx extension: every public object documented once, and found by any of its names.

Completeness
    A public object is a name in the ``__all__`` of a public module (no part
    of its dotted name starts with an underscore) of the packages named by
    the ``apicheck_packages`` setting. It counts as documented when autodoc
    described it under that name, or described the very same object under
    another name (the NumPy reference's functions are documented as
    ``attnref.score_dot``, not as ``attnref.scores.score_dot``). A public name
    without a page is a warning, so ``sphinx-build -W`` fails on it; so is a
    public module that cannot be imported in the docs environment.

Names
    The packages re-export objects (``attnspec.attention`` is defined in
    ``attnspec.composite``; ``attnref.oracle.check_implementation`` in
    ``attnref.oracle.run``), and a docstring refers to an object by the name
    that is natural where it is written. A Python cross-reference that does
    not resolve as written is therefore retried by identity: the name is
    imported in the module where the reference stands, and if that object is
    documented under another name, the reference goes there.

Data docstrings
    napoleon reads the first line of a data, attribute or property docstring
    as ``type: description`` when it holds a colon, which turns a sentence
    such as "What a row with no allowed key gives: ..." into a bogus type. In
    this project the types come from the annotations, so after napoleon the
    sentence is put back together.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

_SCALARS = (str, int, float, bool, type(None))


def _public_modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _resolve(dotted: str) -> tuple[bool, Any]:
    """The object a dotted name refers to, if it can be imported."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


_IDENTITIES: dict[tuple[int, int], dict[int, str]] = {}


def _documented_by_identity(env: BuildEnvironment) -> dict[int, str]:
    """``id(object)`` to the name it is documented under, for every non-scalar py object."""
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    key = (id(objects), len(objects))
    if key not in _IDENTITIES:
        names: dict[int, str] = {}
        for name in sorted(objects):
            found, obj = _resolve(name)
            if found and not isinstance(obj, _SCALARS):
                names.setdefault(id(obj), name)
        _IDENTITIES.clear()
        _IDENTITIES[key] = names
    return _IDENTITIES[key]


def check_public_api(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about every public name that no page documents."""
    documented = set(env.get_domain("py").objects)  # type: ignore[attr-defined]
    identities = _documented_by_identity(env)
    for package in app.config.apicheck_packages:
        for module_name in _public_modules(package):
            try:
                module: ModuleType = importlib.import_module(module_name)
            except ImportError as error:
                logger.warning("public module %s cannot be imported: %s", module_name, error)
                continue
            for name in getattr(module, "__all__", ()):
                qualified = f"{module_name}.{name}"
                if qualified in documented:
                    continue
                obj = getattr(module, name, None)
                if not isinstance(obj, _SCALARS) and id(obj) in identities:
                    continue
                logger.warning("public object %s is not documented on any page", qualified)


def resolve_by_identity(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.reference | None:
    """``missing-reference``: retry an unresolved Python reference under its documented name."""
    if node.get("refdomain") != "py":
        return None
    target = str(node.get("reftarget", ""))
    module = node.get("py:module")
    candidates = [target]
    if module:
        candidates.insert(0, f"{module}.{target}")
    packages = tuple(app.config.apicheck_packages)
    for candidate in candidates:
        if not candidate.startswith(packages):
            continue
        found, obj = _resolve(candidate)
        if not found or isinstance(obj, _SCALARS):
            continue
        name = _documented_by_identity(env).get(id(obj))
        if name is None or name == target:
            continue
        domain = env.get_domain("py")
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
        )
    return None


def restore_data_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Undo napoleon's reading of "phrase: sentence" on a data docstring's first line as a type."""
    if what not in ("data", "attribute", "property"):
        return
    for i, line in enumerate(lines):
        if line.startswith(":type: "):
            phrase = line.removeprefix(":type: ")
            del lines[i]
            if i > 0 and not lines[i - 1]:
                del lines[i - 1]
            first = next((j for j, text in enumerate(lines) if text), None)
            if first is None:
                lines.append(phrase)
            else:
                lines[first] = f"{phrase}: {lines[first]}"
            return


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the setting, the completeness check, the resolver and the docstring repair."""
    app.add_config_value("apicheck_packages", (), "env", types=frozenset({tuple, list}))
    app.connect("env-check-consistency", check_public_api)
    app.connect("missing-reference", resolve_by_identity)
    # After napoleon (priority 500) has parsed the docstring.
    app.connect("autodoc-process-docstring", restore_data_docstring, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
