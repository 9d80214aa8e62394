"""Developer tasks: ``nox`` runs tests, typecheck, lint and docs; ``nox -s check`` the main job."""

from __future__ import annotations

import os
import shutil

import nox

nox.needs_version = ">=2025.02.09"  # nox.project.dependency_groups
nox.options.sessions = ["tests", "typecheck", "lint", "docs"]
# Reuse venvs locally for speed; CI (CI=true) always builds them afresh.
nox.options.reuse_existing_virtualenvs = not os.environ.get("CI")
# pip, not uv: only pip reads this machine's pip.conf, whose find-links hold the CPU torch wheel.
nox.options.default_venv_backend = "virtualenv"

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Pins torch to the CPU build on disk; see the comment in constraints.txt.
CONSTRAINTS = "constraints.txt"


def _install(session: nox.Session, *groups: str) -> None:
    """Install the project with its torch extra and the named dependency groups in one resolve."""
    session.install(
        "-c",
        CONSTRAINTS,
        "-e",
        ".[torch]",
        *nox.project.dependency_groups(PYPROJECT, *groups),
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite, in parallel where there is more than one core."""
    _install(session, "test")
    workers = ["-n", "auto"] if (os.cpu_count() or 1) > 1 else []
    # The slowest tests are listed, so that the CI's time budget can be kept from data.
    timing = ["--durations=25"]
    # Keras (a built-in oracle target) must pick its PyTorch backend before it is imported.
    session.run("pytest", *workers, *timing, *session.posargs, env={"KERAS_BACKEND": "torch"})


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check everything with mypy --strict (files listed in pyproject.toml)."""
    _install(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *session.posargs)
    session.run("ruff", "format", "--check", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML docs with warnings as errors, check they load nothing remote, run doctests."""
    _install(session, "docs")
    shutil.rmtree("docs/_build", ignore_errors=True)
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build",
            "-W",
            "-n",
            "--keep-going",
            "-b",
            builder,
            "-d",
            "docs/_build/doctrees",
            "docs",
            f"docs/_build/{builder}",
        )
        if builder == "html":
            # The pages just built load no script, stylesheet or font from another host,
            # and their citation and glossary links land.
            session.run(
                "pytest",
                "-p",
                "no:cacheprovider",
                "tests/test_docs_offline.py",
                "tests/test_docs_links.py",
                env={"ATTNSPEC_DOCS_HTML": "docs/_build/html"},
            )


@nox.session
def vectors(session: nox.Session) -> None:
    """Regenerate the golden vectors from the exact mpmath reference (``-- --check``: compare)."""
    _install(session, "vectors")
    session.run("python", "-m", "attnref.vectors.golden", *session.posargs)


@nox.session
def precision(session: nox.Session) -> None:
    """Print the precision report: the float64 reference against the mpmath truth, per clause."""
    _install(session, "vectors")
    session.run("python", "-m", "attnref.vectors.precision", *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """Run the main job: the oracle against every built-in implementation (attnspec check)."""
    session.install("-c", CONSTRAINTS, "-e", ".[torch,jax,keras,oracle,onnxruntime]")
    session.run("attnspec", "check", *session.posargs, env={"KERAS_BACKEND": "torch"})


@nox.session
def bench(session: nox.Session) -> None:
    """Time the oracle (default and quick runs), a full-size check, and its sensitivity."""
    session.install("-c", CONSTRAINTS, "-e", ".[torch,jax,keras,oracle,onnxruntime]")
    session.run("python", "-m", "attnref.oracle.bench", "--sensitivity", *session.posargs)


if __name__ == "__main__":
    nox.main()
