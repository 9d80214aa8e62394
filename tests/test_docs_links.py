"""The built documentation links citations to the references and terms to the glossary.

``docs/_ext/citations.py`` turns "Luong et al. (2015), eq. 8" in any page's prose
into a link to that paper's entry and equation on the references page, and the
first use of a glossary term on a page into a link to the glossary. These checks
read the built site, like ``tests/test_docs_offline.py`` (whose ``site`` rules
they share: ``nox -s docs`` runs both on what it has just built).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_docs_offline import built_site


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site (``$ATTNSPEC_DOCS_HTML``, else ``docs/_build/html``; skip if none)."""
    return built_site()


LINK = re.compile(r'href="(?:\.\./)*(references|glossary)\.html#([^"]+)"')
ANCHOR = re.compile(r'id="([^"]+)"')


def _links(site: Path) -> dict[tuple[str, str], list[str]]:
    """Every ``(page, anchor)`` linked into the references or the glossary, and from where."""
    found: dict[tuple[str, str], list[str]] = {}
    for page in sorted(site.rglob("*.html")):
        for target, anchor in LINK.findall(page.read_text(encoding="utf-8")):
            found.setdefault((target, anchor), []).append(str(page.relative_to(site)))
    return found


def test_every_citation_and_term_link_lands_on_an_anchor(site: Path) -> None:
    """No link into the references or the glossary points at an anchor that is not there."""
    anchors = {
        target: set(ANCHOR.findall((site / f"{target}.html").read_text(encoding="utf-8")))
        for target in ("references", "glossary")
    }
    broken = {
        f"{target}#{anchor}": pages[:3]
        for (target, anchor), pages in _links(site).items()
        if anchor not in anchors[target]
    }
    assert broken == {}


@pytest.mark.parametrize(
    ("page", "anchor"),
    [
        ("spec/score_dot.html", "ref-luong2015-eq8"),
        ("spec/score_scaled_dot.html", "ref-vaswani2017-eq1"),
        ("spec/score_additive.html", "ref-bahdanau2015-appa-1-2"),
        ("tutorial/why-attention.html", "ref-bahdanau2015"),
        ("spec/local_m_distribution.html", "ref-luong2015-sec3-2"),
        ("ko/dot-product.html", "ref-luong2015-eq8"),
    ],
)
def test_a_cited_equation_links_to_its_entry(site: Path, page: str, anchor: str) -> None:
    """The clauses and pages that cite a paper's equation link to it."""
    html = (site / page).read_text(encoding="utf-8")
    assert f'references.html#{anchor}"' in html


def test_the_gradients_page_links_its_terms(site: Path) -> None:
    """cotangent, VJP and ulp are linked to the glossary where the tutorial uses them."""
    html = (site / "tutorial" / "gradients.html").read_text(encoding="utf-8")
    for anchor in ("term-cotangent", "term-VJP", "term-ulp"):
        assert f'glossary.html#{anchor}"' in html, anchor
