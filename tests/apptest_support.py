"""Page tests the way a person enters a page: app.py runs first (navigation, settings, set-up), then
the sidebar switches to the page. An uncaught exception always fails the test; an error box fails it
unless the test expects one (`assert_clean` for the pages that must show none)."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from ui import streamlit_patches

streamlit_patches.install()  # as app.py's server does before any page view

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180  # the first Train page run imports TensorFlow and builds a model


def open_page(page: str, session: dict | None = None, timeout: float = TIMEOUT) -> AppTest:
    """`page` (e.g. "pages/diagnose.py") opened through app.py's navigation, with `session` values set
    first; app.py runs around the page, as in the browser."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    assert_no_exception(at)
    if page != "pages/home.py":
        at.switch_page(page).run()
        assert_no_exception(at)
    return at


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def assert_clean(at: AppTest) -> None:
    """No uncaught exception and no error message on the page."""
    assert_no_exception(at)
    assert not at.error, [e.value for e in at.error]


def texts(at: AppTest) -> str:
    """The page's text: markdown, captions, info, success, warning and progress labels."""
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [m.value for m in at.info]
    parts += [m.value for m in at.success] + [m.value for m in at.warning]
    parts += [p.proto.text for p in at.get("progress")]
    return "\n".join(parts)
