"""The Runs page's annotation of the selected runs: the star of any number of them (one button beside
the table), the name, tags and notes of one run (a form), or tags of several at once. Saved in each
run's annotations.json (`Run.annotate`)."""
import streamlit as st

from core.present import runs as runs_view

ANNOTATE_REPORT_KEY = "annotate_report"  # (ok, text) after saving annotations or a bulk change


def star_button(runs: list, column) -> None:
    """Star the selected runs, or unstar them when all are starred: one click, no form to save."""
    if not runs:
        return
    star = runs_view.star_target(runs)
    label = ("Star" if star else "Unstar") + (f" {len(runs)} selected" if len(runs) > 1 else "")
    column.button(label, icon=":material/star:" if star else ":material/star_border:", key="runs_star_button",
                  on_click=retag, args=(runs,), kwargs={"starred": star},
                  help="Starred runs show ★ in the table; 'Starred only' keeps just them.")


def annotate(runs: list) -> None:
    """One selected run: a form for its name, tags and notes; several: tags in bulk."""
    report = st.session_state.pop(ANNOTATE_REPORT_KEY, None)
    if report:
        (st.success if report[0] else st.error)(report[1])
    if len(runs) == 1:
        annotate_one(runs[0])
    elif runs:
        annotate_several(runs)


def annotate_one(run) -> None:
    saved = run.annotations()
    with st.expander(f"Name, tags and notes of {run.display_name()}", icon=":material/edit:"):
        with st.form(f"annotate_{run.id}", border=False):
            name = st.text_input("Name", run.display_name(), key=f"annotate_name_{run.id}",
                                 help="Empty: the name it was trained under")
            tags = st.text_input("Tags, separated by commas", ", ".join(saved.get("tags", [])),
                                 key=f"annotate_tags_{run.id}", help="Short words, e.g. baseline, augmented")
            notes = st.text_area("Notes", saved.get("notes", ""), key=f"annotate_notes_{run.id}")
            if st.form_submit_button("Save", icon=":material/save:"):
                save_annotations(run, name=name.strip() or None, tags=tags, notes=notes)


def save_annotations(run, **changes) -> None:
    try:
        run.annotate(**changes)
    except ValueError as exc:
        st.error(f"Not saved: {exc}")
        return
    st.session_state[ANNOTATE_REPORT_KEY] = (True, f"Saved the name, tags and notes of {run.id}.")
    st.rerun()


def annotate_several(runs) -> None:
    with st.expander(f"Tags of the {len(runs)} selected runs", icon=":material/sell:"):
        cols = st.columns([3, 1, 1], vertical_alignment="bottom")
        cols[0].text_input("Tag", key="annotate_bulk_tag", placeholder="e.g. baseline")
        tag = st.session_state.get("annotate_bulk_tag", "")
        cols[1].button("Add tag", key="annotate_add_button", on_click=retag, args=(runs,), kwargs={"add": [tag]},
                       disabled=not tag.strip())
        cols[2].button("Remove tag", key="annotate_remove_button", on_click=retag, args=(runs,),
                       kwargs={"remove": [tag]}, disabled=not tag.strip())


def retag(runs, **changes) -> None:
    """Button callback: change tags or star of every selected run."""
    try:
        runs_view.retag(runs, **changes)
    except ValueError as exc:
        st.session_state[ANNOTATE_REPORT_KEY] = (False, f"Not changed: {exc}")
        return
    if "starred" not in changes:  # a star shows in the table; a tag change is worth a word
        st.session_state[ANNOTATE_REPORT_KEY] = (True, f"Changed {len(runs)} runs.")
