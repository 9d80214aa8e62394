"""The built documentation loads nothing from the network, and its math engine is on disk.

A page read offline (or behind a firewall) must render: every script,
stylesheet, image and frame that a page *loads* comes from the built site
itself. Links a reader may follow (``<a href="https://...">``) are not loads
and are allowed. MathJax, which turns the LaTeX of the formulas into math, is
served from ``_static/mathjax`` by the ``sphinx-mathjax-offline`` extension
(see ``docs/conf.py``).

The checks of the built site need a build: ``nox -s docs`` builds the HTML and
then runs this file with ``ATTNSPEC_DOCS_HTML`` naming the build, so CI checks
what it has just built. Without the variable they look at
``docs/_build/html`` and are skipped when there is none; the scanner itself is
always tested, on small pages written here.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

BUILD_VARIABLE = "ATTNSPEC_DOCS_HTML"
DEFAULT_BUILD = Path(__file__).parent.parent / "docs" / "_build" / "html"

# What a browser fetches by itself when it renders a page: (tag, attribute).
LOADING_ATTRIBUTES = {
    ("script", "src"),
    ("img", "src"),
    ("iframe", "src"),
    ("embed", "src"),
    ("source", "src"),
    ("audio", "src"),
    ("video", "src"),
    ("object", "data"),
}
# A <link> loads its href only for these relations (rel="next" or "search" is a link).
LOADING_RELATIONS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "manifest"}
# url(...) anywhere, and the bare string form of @import ("@import 'x.css';").
CSS_URL = re.compile(r"""url\(\s*["']?([^"')\s]+)|@import\s+["']([^"']+)""")


def is_external(url: str) -> bool:
    """Whether ``url`` names another host: a scheme (``https:``, ``data:`` excepted) or ``//``."""
    parts = urlsplit(url.strip())
    if parts.scheme == "data":
        return False
    return bool(parts.scheme) or url.strip().startswith("//")


class _Loads(HTMLParser):
    """Collect every URL a page loads, and the scripts, as ``(tag, url)``."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "link":
            relations = set(values.get("rel", "").lower().split())
            if relations & LOADING_RELATIONS and "href" in values:
                self.loads.append((tag, values["href"]))
            return
        for loading_tag, attribute in LOADING_ATTRIBUTES:
            if tag == loading_tag and attribute in values:
                self.loads.append((tag, values[attribute]))


def page_loads(html: str) -> list[tuple[str, str]]:
    """Every ``(tag, url)`` that rendering ``html`` fetches."""
    parser = _Loads()
    parser.feed(html)
    parser.close()
    return parser.loads


def external_loads(html: str) -> list[str]:
    """The URLs that ``html`` would fetch from another host."""
    return [url for _, url in page_loads(html) if is_external(url)]


def css_external_loads(css: str) -> list[str]:
    """The ``@import`` and ``url()`` targets of a stylesheet that are on another host."""
    urls = [inside or imported for inside, imported in CSS_URL.findall(css)]
    return [url for url in urls if is_external(url)]


# --- the scanner, on pages written here ------------------------------------------------------

PAGES = [
    ('<script src="https://cdn.example.org/mathjax/tex-chtml.js"></script>', True),
    ('<script defer src="//cdn.example.org/x.js"></script>', True),
    ('<link rel="stylesheet" href="https://fonts.example.org/css">', True),
    ('<link rel="preload" href="http://example.org/font.woff2">', True),
    ('<img src="https://example.org/figure.png">', True),
    ('<iframe src="https://example.org/embed"></iframe>', True),
    ('<script src="_static/mathjax/tex-chtml.js"></script>', False),
    ('<script src="../_static/doctools.js?v=1"></script>', False),
    ('<link rel="stylesheet" href="_static/furo.css">', False),
    ('<link rel="next" href="https://example.org/next.html">', False),
    ('<a href="https://arxiv.org/abs/1508.04025">Luong et al.</a>', False),
    ('<img src="data:image/png;base64,AAAA">', False),
    ("<script>window.MathJax = {};</script>", False),
]


@pytest.mark.parametrize(
    ("html", "external"), PAGES, ids=[f"{'external' if e else 'local'}:{h[:40]}" for h, e in PAGES]
)
def test_scanner_tells_external_loads_from_local_ones(html: str, external: bool) -> None:
    """A load from another host is found; a local load, a link or inline code is not."""
    assert bool(external_loads(html)) is external


def test_scanner_reads_stylesheets() -> None:
    """``@import`` and ``url()`` in a stylesheet are loads too."""
    css = (
        '@import url("https://fonts.example.org/x.css");\n'
        "@import 'https://example.org/bare.css';\n"
        "a { background: url(../img/local.png); }\n"
        "b { src: url('//cdn.example.org/f.woff2'); }\n"
    )
    assert css_external_loads(css) == [
        "https://fonts.example.org/x.css",
        "https://example.org/bare.css",
        "//cdn.example.org/f.woff2",
    ]


# --- the built site --------------------------------------------------------------------------


def built_site() -> Path:
    """The built HTML: ``$ATTNSPEC_DOCS_HTML`` (it must exist), else ``docs/_build/html``.

    Skips the calling test when neither names a built site.
    """
    named = os.environ.get(BUILD_VARIABLE)
    if named:
        path = Path(named)
        assert (path / "index.html").is_file(), f"{BUILD_VARIABLE}={named} holds no built site"
        return path
    if not (DEFAULT_BUILD / "index.html").is_file():
        pytest.skip(f"no built docs; nox -s docs builds them and sets {BUILD_VARIABLE}")
    return DEFAULT_BUILD


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site, as :func:`built_site` finds it."""
    return built_site()


def _pages(site: Path) -> list[Path]:
    pages = sorted(site.rglob("*.html"))
    assert pages, f"{site} holds no HTML page"
    return pages


def test_no_page_loads_anything_from_another_host(site: Path) -> None:
    """Every script, stylesheet, image and frame of every page comes from the site."""
    offending = {
        str(page.relative_to(site)): found
        for page in _pages(site)
        if (found := external_loads(page.read_text(encoding="utf-8")))
    }
    assert offending == {}


def test_no_stylesheet_loads_anything_from_another_host(site: Path) -> None:
    """The site's own CSS imports no web font or stylesheet from elsewhere."""
    offending = {
        str(sheet.relative_to(site)): found
        for sheet in sorted((site / "_static").rglob("*.css"))
        if (found := css_external_loads(sheet.read_text(encoding="utf-8")))
    }
    assert offending == {}


def test_every_page_with_math_loads_mathjax_from_the_site(site: Path) -> None:
    """A page with a formula loads a MathJax script that the build put on disk."""
    math_pages = [p for p in _pages(site) if 'class="math' in p.read_text(encoding="utf-8")]
    assert math_pages, "no page has a formula: did the math extension change?"
    missing = {}
    for page in math_pages:
        scripts = [
            url.split("?")[0]
            for tag, url in page_loads(page.read_text(encoding="utf-8"))
            if tag == "script" and "mathjax" in url.lower()
        ]
        if not scripts or not all((page.parent / url).is_file() for url in scripts):
            missing[str(page.relative_to(site))] = scripts
    assert missing == {}


def test_mathjax_fonts_are_on_disk(site: Path) -> None:
    """MathJax's CommonHTML output fetches its fonts beside its script; they are there."""
    fonts = list((site / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert any(font.name == "MathJax_Main-Regular.woff" for font in fonts)
