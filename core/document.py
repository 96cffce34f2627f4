"""One renderer for the documents CXR Lab writes (the model card, a study's report): a document is a
list of blocks, and two Jinja2 templates (core/templates/document.md.j2 and document.html.j2) turn it
into Markdown or into one self-contained HTML page, so both say the same.

Escaping is done here, once: in HTML every text is escaped as `html.escape` does (the templates'
`finalize`; only an inline SVG chart, already XML, goes in as it is); in Markdown every text reads
literally (no raw HTML: < and > become entities; a table cell's | is escaped). Imports nothing of ours.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    style: str = ""  # "meta": a by-line (italic in Markdown); any other: the HTML paragraph's class


@dataclass(frozen=True)
class Lead:
    """A labelled paragraph: '**Conclusion.** text' in Markdown, a heading and its paragraph in HTML."""
    label: str
    text: str
    style: str = ""


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    """A chart: an image file beside the Markdown, inline SVG markup in the HTML page."""
    caption: str
    image: str = ""  # the path Markdown links to
    svg: str = ""    # the markup HTML shows (trusted: drawn by vl_convert, not typed by anyone)


@dataclass(frozen=True)
class Codes:
    """Identifiers (run ids), each set as code."""
    items: tuple[str, ...]


@dataclass(frozen=True)
class Footer:
    text: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)
    style: str = ""  # the HTML page's CSS


def markdown(document: Document) -> str:
    return _template("document.md.j2").render(doc=document, blocks=_named(document.blocks)).strip() + "\n"


def html_page(document: Document) -> str:
    return _template("document.html.j2").render(doc=document, blocks=_named(document.blocks),
                                                style=Markup(document.style))  # our own CSS: not escaped


def md_text(text) -> str:
    """Text as Markdown shows it literally: no raw HTML, one line."""
    return " ".join(str(text).split()).replace("<", "&lt;").replace(">", "&gt;")


def md_cell(value) -> str:
    return md_text(value).replace("\\", "\\\\").replace("|", "\\|") or " "


def md_alt(caption) -> str:
    return md_text(caption).replace("[", "\\[").replace("]", "\\]")


def md_code(text) -> str:
    return str(text).replace("`", "'")


def _html_finalize(value):
    """Every value a template prints is escaped, but markup a document marked as trusted (an SVG)."""
    return value if isinstance(value, Markup) else html.escape(str(value))


def _named(blocks: list) -> list[tuple[str, object]]:
    """(kind, block) pairs: the templates choose how to write each kind."""
    return [(type(block).__name__.lower(), _trusted(block)) for block in blocks]


def _trusted(block):
    return Figure(block.caption, block.image, Markup(block.svg)) if isinstance(block, Figure) else block


_ENVIRONMENTS: dict[str, jinja2.Environment] = {}


def _template(name: str) -> jinja2.Template:
    kind = "html" if name.endswith(".html.j2") else "md"
    if kind not in _ENVIRONMENTS:
        environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                                         undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                         trim_blocks=True, lstrip_blocks=True,
                                         finalize=_html_finalize if kind == "html" else None)
        environment.filters.update(md=md_text, md_cell=md_cell, md_alt=md_alt, md_code=md_code)
        _ENVIRONMENTS[kind] = environment
    return _ENVIRONMENTS[kind].get_template(name)
