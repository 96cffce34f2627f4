"""The project's layout: every page is entered through app.py, page scripts stay short."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.apptest_support import APP, assert_no_exception

ROOT = Path(APP).parent
PAGE_SCRIPTS = sorted((ROOT / "pages").glob("*.py"))


def test_page_scripts_are_in_pages_and_components_in_ui():
    """The layout the project promises: page scripts in pages/ (each listed by app.py), the parts they
    share in ui/ (no page script there)."""
    app = Path(APP).read_text()
    assert [p.name for p in PAGE_SCRIPTS] == sorted(p.name for p in (ROOT / "pages").iterdir() if p.is_file())
    assert all(f'st.Page("pages/{p.name}"' in app for p in PAGE_SCRIPTS)
    assert 'st.Page("ui/' not in app


def test_a_bookmarked_page_on_a_fresh_server_runs_through_app_py():
    """The first request of a fresh server names a page, not the home page: app.py must run around it
    (its sidebar caption and navigation), not the page's file on its own."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/runs.py").run()  # before any run: the page is named by its file
    assert_no_exception(at)
    assert "Research tool, not for clinical use." in [c.value for c in at.sidebar.caption]
    assert any("Runs" in title.value for title in at.title)


def test_page_scripts_stay_short():
    """A page script reads state, calls core and draws; larger sections are components in ui/."""
    lengths = {path.name: len(path.read_text().splitlines()) for path in PAGE_SCRIPTS}
    assert len(lengths) == 8, lengths
    assert max(lengths.values()) < 250, lengths
