"""The one renderer of the model card and a study's report (core/document.py): every text is escaped
in HTML as html.escape does, and reads literally in Markdown (no raw HTML, a cell's | escaped)."""
import html
from datetime import datetime

import pandas as pd

from core import document
from core.document import Bullets, Codes, Document, Figure, Footer, Heading, Lead, Paragraph, Table
from core.ml import model_card
from core.present.study_report import StudyReport, report_html, report_markdown

SCRIPT = '<script>alert("x")</script>'


def every_block(text: str) -> Document:
    return Document(text, [Heading(text, 1), Paragraph(text, "meta"), Paragraph(text), Lead(text, text),
                           Bullets((text,)), Table((text,), ((text,),)), Figure(text, "charts/c.png", "<svg></svg>"),
                           Codes((text,)), Footer(text)], style="h1{}")


def test_every_block_escapes_its_text_in_both_formats():
    page, text = document.html_page(every_block(SCRIPT)), document.markdown(every_block(SCRIPT))
    assert "<script" not in page and page.count(html.escape(SCRIPT)) == 12  # <title>, a lead's two, the rest one each
    assert "<svg></svg>" in page  # a chart's markup, the one thing trusted
    # Markdown: a code span shows its text as it is (CommonMark reads no HTML inside it); nothing else is raw
    code = f"`{SCRIPT}`"
    assert code in text and "<script" not in text.replace(code, "")
    assert text.count("&lt;script&gt;") == 11  # no <title>; the figure's alt text and caption


def test_a_table_cell_keeps_its_pipe_and_backslash_in_markdown():
    text = document.markdown(Document("t", [Table(("a", "b"), (("x|y", "c:\\d"),))]))
    assert "| x\\|y | c:\\\\d |" in text


def test_a_run_named_with_a_script_is_escaped_in_its_model_card_and_its_study_report(make_run):
    run = make_run("done", name=SCRIPT)
    run.annotate(name=SCRIPT + " shown")
    card_markdown, card_page = model_card.model_card_both(run)
    report = StudyReport(title=f"Study of {SCRIPT}", question="q?", conclusion=f"{SCRIPT} scores best.",
                         setting="dropout", base_settings=run.config(),
                         table=pd.DataFrame({"run": [SCRIPT + " shown"], "Test accuracy": ["0.9"]}),
                         created=datetime(2025, 1, 2, 3, 4))
    report_text, _ = report_markdown(report)
    for page in (card_page, report_html(report)):
        assert "<script" not in page and html.escape(SCRIPT) in page and html.escape(SCRIPT + " shown") in page
    for text in (card_markdown, report_text):
        assert "<script" not in text and '&lt;script&gt;alert("x")&lt;/script&gt; shown' in text
