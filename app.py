"""CXR Lab dashboard: `streamlit run app.py` (or `make run`).

`streamlit run` first imports this file as the server (`__name__` is "app"): the st.App below starts
the job manager with the server, so queued runs train before any browser tab is opened
(core/workers/service.py). Then every page view runs this file as the page script (`__name__` is
"__main__"), which only sets up the page and the navigation. The page scripts live in pages/, their
shared components in ui/; a bookmarked page still runs through this file (ui.common.enter_through_app).
TensorFlow is imported lazily by pages (when a model is built or a run starts), so the first paint is fast.
"""
import streamlit as st

if __name__ != "__main__":
    from core.workers.service import dashboard_lifespan
    from ui import streamlit_patches

    streamlit_patches.install()  # before any page view (ui/streamlit_patches.py)
    app = st.App("app.py", lifespan=dashboard_lifespan)
else:
    st.set_page_config(page_title="CXR Lab", page_icon="🫁", layout="wide")
    pages = [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_open:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/sweeps.py", title="Sweeps", icon=":material/tune:"),
        st.Page("pages/studies.py", title="Studies", icon=":material/science:"),
        st.Page("pages/runs.py", title="Runs & Compare", icon=":material/leaderboard:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
        st.Page("pages/diagnose.py", title="Diagnose", icon=":material/stethoscope:"),
    ]
    # Navigation first, so the sidebar is drawn before the shared set-up below is imported.
    page = st.navigation(pages)

    # After the navigation on purpose (see above); importing it installs ui/streamlit_patches.
    from ui import common  # noqa: E402

    common.keep_settings()
    st.sidebar.caption("Research tool, not for clinical use.")
    try:
        with common.running_through_app():
            page.run()
    finally:  # also when the page reruns, stops or switches pages
        common.save_settings()
