"""Sphinx extension: the papers the specification cites, listed once and linked where cited.

Markup it adds
    ``.. paper-list::`` writes the references: one entry per paper of
    :data:`PAPERS`, with its anchor (``ref-luong2015``), and under it the
    equations and sections the specification cites, each with its own anchor
    (``ref-luong2015-eq8``) and the functions that cite it.

Links it makes
    In the prose of every HTML page (docstrings rendered by autodoc included), a
    citation such as "Luong et al. (2015), eq. 8" or "Bahdanau et al. 2015"
    becomes a link to the paper's entry, and its "eq. N" a link to that
    equation's entry when the list has it. The first use of a glossary term on a
    page that does not already link it with ``:term:`` becomes a link to the
    :doc:`/glossary` (only in prose: never in code, math, titles or existing links).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from docutils import nodes
from docutils.nodes import Node
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

REFERENCES_DOC = "references"
GLOSSARY_DOC = "glossary"


@dataclass(frozen=True)
class Part:
    """A numbered equation, section or appendix of a paper, and what the spec takes from it."""

    key: str
    """``eq8``, ``sec3.2``, ``appA.1.2``: the anchor's suffix."""
    label: str
    """How the docs cite it: ``eq. 8``, ``section 3.2``."""
    used_for: str
    """What the specification takes from it, in reStructuredText."""


@dataclass(frozen=True)
class Paper:
    """One cited work."""

    key: str
    """``luong2015``: the anchor is ``ref-<key>``."""
    citation: re.Pattern[str]
    """How the prose cites it (author and year)."""
    authors: str
    year: int
    title: str
    venue: str
    url: str
    about: str
    """One sentence: what the project takes from it."""
    parts: tuple[Part, ...] = field(default=())


def _et_al(name: str, year: int) -> re.Pattern[str]:
    # "Luong et al. (2015)", "Luong et al. 2015" and "Luong et al. (2015, eq. 8)"; a closing
    # parenthesis is the citation's only when it opened one ("(Luong et al. 2015)" is not).
    return re.compile(rf"\b{name}\s+et\s+al\.,?\s+(?:\({year}\)|\(?{year})")


PAPERS: tuple[Paper, ...] = (
    Paper(
        "luong2015",
        _et_al("Luong", 2015),
        "Minh-Thang Luong, Hieu Pham, Christopher D. Manning",
        2015,
        "Effective Approaches to Attention-based Neural Machine Translation",
        "EMNLP 2015; arXiv:1508.04025",
        "https://arxiv.org/abs/1508.04025",
        "Global and local attention for seq2seq; most of the specification's steps.",
        (
            Part("sec3", "section 3", "global attention: attend over every source state"),
            Part(
                "sec3.2",
                "section 3.2",
                "local attention, local-m (:func:`attnspec.local_m_distribution`)",
            ),
            Part(
                "eq5",
                "eq. 5",
                "the attentional hidden state on the concatenation, context first "
                "(:func:`attnspec.attentional_hidden_state`, :func:`attnspec.concatenate_context`)",
            ),
            Part("eq6", "eq. 6", "the output distribution (:func:`attnspec.output_distribution`)"),
            Part(
                "eq7",
                "eq. 7",
                "the attention distribution, a softmax of the scores "
                "(:func:`attnspec.attention_distribution`)",
            ),
            Part(
                "eq8",
                "eq. 8",
                "the scores *dot*, *general*, *concat* and *location* "
                "(:func:`attnspec.score_dot`, :func:`attnspec.score_general`, "
                ":func:`attnspec.score_concat`, :func:`attnspec.score_location`)",
            ),
            Part(
                "eq9",
                "eq. 9",
                "the predicted position of local-p (:func:`attnspec.local_p_position`)",
            ),
            Part(
                "eq10",
                "eq. 10",
                "the Gaussian of local-p, after the window softmax "
                "(:func:`attnspec.local_p_distribution`)",
            ),
        ),
    ),
    Paper(
        "bahdanau2015",
        _et_al("Bahdanau", 2015),
        "Dzmitry Bahdanau, Kyunghyun Cho, Yoshua Bengio",
        2015,
        "Neural Machine Translation by Jointly Learning to Align and Translate",
        "ICLR 2015; arXiv:1409.0473",
        "https://arxiv.org/abs/1409.0473",
        "Attention for seq2seq, and the fixed-length bottleneck it removes.",
        (
            Part(
                "sec1",
                "section 1",
                "the fixed-length vector as a bottleneck (:doc:`/tutorial/why-attention`)",
            ),
            Part(
                "eq5",
                "eq. 5",
                "the context as the weighted sum of the annotations "
                "(:func:`attnspec.attention_value`)",
            ),
            Part(
                "eq6",
                "eq. 6",
                "the weights as a softmax of the energies "
                "(:func:`attnspec.attention_distribution`)",
            ),
            Part(
                "appA.1.2",
                "appendix A.1.2",
                "the alignment model, the additive score (:func:`attnspec.score_additive`)",
            ),
        ),
    ),
    Paper(
        "vaswani2017",
        _et_al("Vaswani", 2017),
        "Ashish Vaswani, Noam Shazeer, Niki Parmar, Jakob Uszkoreit, Llion Jones, "
        "Aidan N. Gomez, Łukasz Kaiser, Illia Polosukhin",
        2017,
        "Attention Is All You Need",
        "NeurIPS 2017; arXiv:1706.03762",
        "https://arxiv.org/abs/1706.03762",
        "The Transformer's scaled dot-product attention.",
        (
            Part(
                "eq1",
                "eq. 1",
                "scaled dot-product attention and its scale :math:`1/\\sqrt{d_k}` "
                "(:func:`attnspec.score_scaled_dot`, "
                ":func:`attnspec.scaled_dot_product_attention`)",
            ),
        ),
    ),
    Paper(
        "ainslie2023",
        _et_al("Ainslie", 2023),
        "Joshua Ainslie, James Lee-Thorp, Michiel de Jong, Yury Zemlyanskiy, Federico Lebrón, "
        "Sumit Sanghai",
        2023,
        "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints",
        "EMNLP 2023; arXiv:2305.13245",
        "https://arxiv.org/abs/2305.13245",
        "Grouped query heads (:clause:`sdpa.grouped-query-heads`).",
    ),
    Paper(
        "beltagy2020",
        _et_al("Beltagy", 2020),
        "Iz Beltagy, Matthew E. Peters, Arman Cohan",
        2020,
        "Longformer: The Long-Document Transformer",
        "arXiv:2004.05150",
        "https://arxiv.org/abs/2004.05150",
        "Sliding-window attention (:clause:`sdpa.window`).",
    ),
    Paper(
        "gemma2024",
        _et_al("Gemma Team", 2024),
        "Gemma Team, Google DeepMind",
        2024,
        "Gemma 2: Improving Open Language Models at a Practical Size",
        "arXiv:2408.00118",
        "https://arxiv.org/abs/2408.00118",
        "Capping the attention logits with c tanh(s / c) (:clause:`sdpa.softcap`).",
    ),
    Paper(
        "dao2022",
        _et_al("Dao", 2022),
        "Tri Dao, Daniel Y. Fu, Stefano Ermon, Atri Rudra, Christopher Ré",
        2022,
        "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
        "NeurIPS 2022; arXiv:2205.14135",
        "https://arxiv.org/abs/2205.14135",
        "Tiled attention with an online softmax that keeps each row's log-sum-exp "
        "(:func:`attnspec.log_sum_exp`, :clause:`sdpa.log-sum-exp`).",
    ),
    Paper(
        "xiao2024",
        _et_al("Xiao", 2024),
        "Guangxuan Xiao, Yuandong Tian, Beidi Chen, Song Han, Mike Lewis",
        2024,
        "Efficient Streaming Language Models with Attention Sinks",
        "ICLR 2024; arXiv:2309.17453",
        "https://arxiv.org/abs/2309.17453",
        "Attention sinks: probability mass a row may put on no real key (:clause:`sdpa.sinks`).",
    ),
    Paper(
        "openai2025",
        re.compile(r"\bOpenAI\s+\(?2025"),
        "OpenAI",
        2025,
        "gpt-oss-120b & gpt-oss-20b Model Card",
        "arXiv:2508.10925",
        "https://arxiv.org/abs/2508.10925",
        "A learned sink logit per head joins every softmax denominator (:clause:`sdpa.sinks`).",
    ),
    Paper(
        "sutskever2014",
        _et_al("Sutskever", 2014),
        "Ilya Sutskever, Oriol Vinyals, Quoc V. Le",
        2014,
        "Sequence to Sequence Learning with Neural Networks",
        "NeurIPS 2014; arXiv:1409.3215",
        "https://arxiv.org/abs/1409.3215",
        "The encoder-decoder that reads the source into one fixed vector.",
    ),
    Paper(
        "cho2014",
        _et_al("Cho", 2014),
        "Kyunghyun Cho, Bart van Merriënboer, Caglar Gulcehre, Dzmitry Bahdanau, "
        "Fethi Bougares, Holger Schwenk, Yoshua Bengio",
        2014,
        "Learning Phrase Representations using RNN Encoder-Decoder for Statistical "
        "Machine Translation",
        "EMNLP 2014; arXiv:1406.1078",
        "https://arxiv.org/abs/1406.1078",
        "The RNN encoder-decoder, and how its quality falls with the sentence length.",
    ),
    Paper(
        "higham2002",
        re.compile(r"\bHigham\b"),
        "Nicholas J. Higham",
        2002,
        "Accuracy and Stability of Numerical Algorithms, 2nd edition",
        "SIAM, 2002",
        "https://doi.org/10.1137/1.9780898718027",
        "The rounding-error bounds of the oracle's tolerances (:mod:`attnref.oracle.tolerance`).",
    ),
    Paper(
        "squire1998",
        re.compile(r"\bSquire\s+and\s+Trapp\b"),
        "William Squire, George Trapp",
        1998,
        "Using Complex Variables to Estimate Derivatives of Real Functions",
        "SIAM Review 40(1), 1998",
        "https://doi.org/10.1137/S003614459631241X",
        "Complex-step differentiation, the exact witness of the gradient checks "
        "(:mod:`attnref.testing.gradcheck`).",
    ),
    Paper(
        "bradner1997",
        re.compile(r"\bRFC\s+2119\b"),
        "Scott Bradner",
        1997,
        "RFC 2119: Key words for use in RFCs to Indicate Requirement Levels",
        "IETF, 1997",
        "https://www.rfc-editor.org/rfc/rfc2119",
        "MUST and SHOULD: the required and recommended levels of the clauses.",
    ),
)
"""Every cited work, in the order of the references page."""

# What may follow a citation: ", eq. 8", ", eq. (8)", ", section 3.2", ", appendix A.1.2".
_PART_AFTER = re.compile(
    r"^,?\s+(?P<kind>eqs?\.|section|appendix)\s+(?P<open>\()?"
    r"(?P<number>[0-9A-Z][0-9.]*[0-9A-Z]|[0-9A-Z])(?(open)\))"
)
_PART_KIND = {"eq.": "eq", "eqs.": "eq", "section": "sec", "appendix": "app"}

# Where prose is not: nothing inside these is linked.
_SKIP: tuple[type[Node], ...] = (
    nodes.literal,
    nodes.literal_block,
    nodes.doctest_block,
    nodes.reference,
    nodes.math,
    nodes.math_block,
    nodes.title,
    nodes.raw,
    nodes.comment,
    nodes.term,
    nodes.target,
    addnodes.desc_signature,
    addnodes.pending_xref,
)


def paper_label(paper: Paper, part: Part | None = None) -> str:
    """The target name of a paper's entry, or of one of its parts (``ref-luong2015-sec3.2``)."""
    return f"ref-{paper.key}" if part is None else f"ref-{paper.key}-{part.key}"


def paper_anchor(paper: Paper, part: Part | None = None) -> str:
    """The HTML id docutils makes of that name (``ref-luong2015-sec3-2``)."""
    return nodes.make_id(paper_label(paper, part))


class PaperList(SphinxDirective):
    """``.. paper-list::``: the references, one entry per paper, its parts below it."""

    def run(self) -> list[Node]:
        sections: list[Node] = []
        for paper in PAPERS:
            section = nodes.section(ids=[paper_anchor(paper)], names=[paper_label(paper)])
            section += nodes.title(text=_short(paper))
            lines = [
                f"**{paper.authors}** ({paper.year}). *{paper.title}*. {paper.venue}.",
                f"`{paper.url} <{paper.url}>`__",
                "",
                paper.about,
                "",
            ]
            for part in paper.parts:
                label = part.label[0].upper() + part.label[1:]
                lines += [
                    f".. _{paper_label(paper, part)}:",
                    "",
                    f"- **{label}**: {part.used_for}.",
                    "",
                ]
            section += self.parse_text_to_nodes("\n".join(lines))
            sections.append(section)
        return sections


def _short(paper: Paper) -> str:
    """``Luong et al. (2015)``: the first author's surname, and the year."""
    surname = paper.authors.split(",")[0].split()[-1]
    return f"{surname}{' et al.' if ',' in paper.authors else ''} ({paper.year})"


def _prose(node: Node) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, _SKIP):
            return False
        parent = parent.parent
    return True


def _link(text: str, uri: str) -> nodes.reference:
    return nodes.reference(text, text, refuri=uri, internal=True, classes=["citation-link"])


def _cite(text: str, base: str) -> list[Node] | None:
    """``text`` with its citations linked, or ``None`` when it cites nothing."""
    found = []
    for paper in PAPERS:
        for match in paper.citation.finditer(text):
            found.append((match.start(), match.end(), paper))
    if not found:
        return None
    found.sort(key=lambda item: item[0])
    out: list[Node] = []
    position = 0
    for start, end, paper in found:
        if start < position:
            continue
        out.append(nodes.Text(text[position:start]))
        out.append(_link(text[start:end], f"{base}#{paper_anchor(paper)}"))
        position = end
        after = _PART_AFTER.match(text[end:])
        if after is None:
            continue
        key = _PART_KIND[after.group("kind")] + after.group("number")
        part = next((p for p in paper.parts if p.key == key), None)
        if part is None:
            continue
        label_start = end + after.start("kind")
        label_end = end + after.end()
        out.append(nodes.Text(text[end:label_start]))
        out.append(_link(text[label_start:label_end], f"{base}#{paper_anchor(paper, part)}"))
        position = label_end
    out.append(nodes.Text(text[position:]))
    return out


def _glossary_terms(app: Sphinx) -> dict[str, str]:
    """Every glossary term (lower case) and its anchor."""
    std = app.env.domains.standard_domain
    return {
        name: anchor
        for (kind, name), (docname, anchor) in std.objects.items()
        if kind == "term" and docname == GLOSSARY_DOC
    }


def _term_pattern(term: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(word) for word in term.split())
    return re.compile(rf"(?<![\w-]){words}s?(?![\w-])", re.IGNORECASE)


def link_citations_and_terms(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """``doctree-resolved``: link citations and the first use of each glossary term."""
    if app.builder.format != "html":
        return
    references = app.builder.get_relative_uri(docname, REFERENCES_DOC)
    glossary = app.builder.get_relative_uri(docname, GLOSSARY_DOC)
    terms = _glossary_terms(app) if docname != GLOSSARY_DOC else {}
    # A term the page already links with :term: is not linked again.
    for ref in doctree.findall(nodes.reference):
        if "std-term" in ref.get("classes", []) or any(
            "std-term" in child.get("classes", []) for child in ref.findall(nodes.inline)
        ):
            terms.pop(ref.astext().lower().rstrip("s"), None)
            terms.pop(ref.astext().lower(), None)
    patterns = {term: _term_pattern(term) for term in terms}
    for text in list(doctree.findall(nodes.Text)):
        if not _prose(text):
            continue
        parent = text.parent
        if parent is None:
            continue
        replacement = None
        if docname != REFERENCES_DOC:
            replacement = _cite(str(text), references)
        if replacement is None and patterns:
            replacement = _first_terms(str(text), patterns, terms, glossary)
        if replacement is not None:
            parent.replace(text, replacement)


def _first_terms(
    text: str, patterns: dict[str, re.Pattern[str]], terms: dict[str, str], glossary: str
) -> list[Node] | None:
    """``text`` with the first use of each not-yet-linked term linked; linked terms are dropped."""
    hits = []
    for term, pattern in patterns.items():
        match = pattern.search(text)
        if match is not None:
            hits.append((match.start(), match.end(), term))
    if not hits:
        return None
    hits.sort()
    out: list[Node] = []
    position = 0
    for start, end, term in hits:
        if start < position:
            continue
        out.append(nodes.Text(text[position:start]))
        link = _link(text[start:end], f"{glossary}#{terms[term]}")
        link["classes"].append("glossary-link")
        out.append(link)
        position = end
        del patterns[term]
    out.append(nodes.Text(text[position:]))
    return out


def setup(app: Sphinx) -> dict[str, Any]:
    """Register ``paper-list`` and link citations and terms in every HTML page."""
    app.add_directive("paper-list", PaperList)
    app.connect("doctree-resolved", link_citations_and_terms)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
