"""Studies: the classic ablations of chest X-ray reports in one click. A gallery of studies, each a
ready sweep repeated over seeds (or patient-grouped folds), on the dataset loaded on the Dataset page
when the study fits it (else the built-in set); its page answers the study's question in one sentence
from the numbers, beside what such reports found, with the chart, error bars and table, and exports a
report. The logic is in core.present.studies and core.settings.studies.
"""
import streamlit as st

from core.data.datasets import TASK_TITLES
from core.present import estimate, study_report, sweep_plan
from core.present import runs as runs_view
from core.present import studies as studies_view
from core.present import sweeps as sweep_view
from core.present.sweeps import METRIC_TITLES
from core.settings.studies import VARIANTS, get_study
from core.store.sweeps import submit_sweep
from ui import common, layer_table, sweep_form

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py

STUDY_KEY = "study_key"
GALLERY_COLUMNS = 3


def main() -> None:
    st.title("Studies")
    st.caption("The classic ablations of chest X-ray reports, each a ready sweep with seed repeats, on the "
               "dataset you loaded when it fits: run one, and read its answer with its uncertainty beside what "
               "such reports found. Research tool, not for clinical use.")
    store = common.run_store()
    chosen = gallery(store)
    study = get_study(chosen)
    st.divider()
    st.header(study.title, anchor="study")
    st.markdown(f"**{study.question}**")
    st.caption(f"Varies {studies_view.varies_text(study)}. Fits {studies_view.FITS[study.fits]}.")
    reported = studies_view.reference_text(study)
    if reported:
        st.markdown(f"**What such reports found:** {reported}")
    with st.container(border=True):
        launch_section(store, study)
    results_section(store, study)


def gallery(store) -> str:
    """A card per study; **Open** picks it (also ?study=KEY). Returns the chosen study's key."""
    cards = studies_view.gallery(store)
    keys = [card["key"] for card in cards]
    if st.query_params.get("study") in keys:
        st.session_state[STUDY_KEY] = st.query_params["study"]
    if st.session_state.get(STUDY_KEY) not in keys:
        st.session_state[STUDY_KEY] = keys[0]
    columns = st.columns(GALLERY_COLUMNS)
    for i, card in enumerate(cards):
        with columns[i % GALLERY_COLUMNS].container(border=True):
            st.markdown(f"**{card['title']}**")
            st.caption(card["question"])
            st.caption(f"Fits {card['fits']}")
            latest = card["latest"]
            st.caption(f"Last run: {studies_view.sweep_title(latest)}" if latest else "Not run here yet")
            if st.button("Open", key=f"study_open_{card['key']}", icon=":material/science:",
                         type="primary" if card["key"] == st.session_state[STUDY_KEY] else "secondary"):
                st.session_state[STUDY_KEY] = card["key"]
                st.query_params["study"] = card["key"]
                st.rerun()
    return st.session_state[STUDY_KEY]


# ----------------------------------------------------------------------------- launching

def launch_section(store, study) -> None:
    common.init_widget("study_variant", "quick")
    common.init_widget("study_task", "binary")
    loaded = common.dataset_settings()
    cols = st.columns(2)
    variant = cols[0].radio("Variant", VARIANTS, key="study_variant", horizontal=True,
                            format_func=studies_view.VARIANT_TITLES.get)
    task = "binary"
    if loaded["data_source"] == "builtin":
        task = cols[1].radio("Classes", studies_view.TASKS, key="study_task", horizontal=True,
                             format_func=TASK_TITLES.get,
                             help="The built-in set's two tasks: pneumonia or not, or its two kinds.")
    dataset, note = studies_view.study_dataset(study, loaded, task)
    st.caption(f"Runs on: {studies_view.dataset_text(dataset)} (choose the dataset on the Dataset page).")
    if note:
        st.info(note, icon=":material/swap_horiz:")
    try:
        sweep = studies_view.variant_sweep(study.key, variant, dataset=dataset)
    except ValueError as exc:
        st.error(f"This study cannot run: {exc}")
        return
    st.caption(studies_view.plan_text(sweep))
    if study.needs_imagenet_weights:
        missing = weights_missing(sweep.configs())
        if missing:
            st.warning(missing, icon=":material/cloud_off:")
    configs = [config.to_dict() for config in sweep.configs()]
    count = sweep.cv_folds or sweep.repeats
    shown = sweep_plan.preview(configs, "folds" if sweep.cv_folds else "seeds", count,
                               estimate.past_runs(store), macs_of=sweep_form.config_macs)
    cols = st.columns(3)
    cols[0].metric("Runs", shown.runs, help=shown.runs_help)
    cols[1].metric("Estimated time", shown.time)
    cols[2].metric("Epochs per run", "varies" if "epochs" in {axis.setting for axis in sweep.axes}
                   else sweep.base.epochs)
    st.caption(shown.time_note)
    if st.button(f"Run the {variant} study", type="primary", icon=":material/rocket_launch:",
                 key="study_launch_button"):
        with st.spinner("Queuing its runs…"):
            sweep_id = submit_sweep(common.job_manager(), sweep)
        st.session_state[f"study_record_{study.key}"] = sweep_id
        st.toast(f"{len(configs)} runs queued: the results fill in below.")


def weights_missing(configs) -> str | None:
    """Why some of the transfer study's runs would not start from ImageNet here (no weights), or None."""
    import os

    from core.ml import models
    wanted = {(c.arch_params["base"], models.imagenet_weights_path(c.arch_params["base"], c.image_size,
                                                                   c.arch_params.get("alpha", 1.0)))
              for c in configs}
    missing = sorted((base, path) for base, path in wanted if not os.path.exists(path))
    if not missing:
        return None
    bases = ", ".join(dict.fromkeys(base for base, _ in missing))
    return (f"The ImageNet weights of {bases} are not on this machine ({', '.join(p for _, p in missing)}), and "
            "Keras downloads them from the internet: without them the study's runs train the base from scratch "
            "(each run says so), which is not the question. Copy the files there from a machine with internet "
            "access (or run once online), then run the study.")


# ----------------------------------------------------------------------------- results

def results_section(store, study) -> None:
    records = studies_view.study_sweeps(store, study.key)
    if not records:
        st.info("Not run here yet: press **Run the quick study** above.", icon=":material/info:")
        return
    record = pick_record(study, records)
    common.init_widget("study_metric", study.metric)
    metric = st.selectbox("Score", studies_view.SCORE_METRICS, key="study_metric", format_func=METRIC_TITLES.get)
    active = sweep_view.is_active(store, record)
    past = estimate.past_runs(store) if active else []  # once a page run, not every refresh
    st.fragment(results, run_every=2.0 if active else None)(store, record, metric, active, past)
    report_section(store, record, metric, active)


def pick_record(study, records: list[dict]) -> dict:
    ids = {record["id"]: record for record in records}
    key = f"study_record_{study.key}"
    if st.session_state.get(key) not in ids:
        st.session_state[key] = records[0]["id"]
    chosen = st.selectbox("Run of this study", list(ids), key=key, format_func=lambda i: studies_view.sweep_title(ids[i]),
                          disabled=len(ids) == 1)
    return ids[chosen]


def results(store, record: dict, metric: str, live: bool, past: list) -> None:
    """Progress (with the time left while its runs train), the answer, the charts and the table;
    re-drawn every 2 s while its runs train. `past`: the finished runs times are estimated from."""
    frame = studies_view.results_for(store, record)
    counts = sweep_view.progress_counts(frame)
    if live and not counts["active"]:
        st.rerun()  # the study just ended: stop the timer, refresh the page (and the report)
    ended = counts["done"] + counts["stopped"]
    left = f" · {runs_view.time_left_text(study_time_left(store, record, past))}" if counts["active"] else ""
    st.progress(ended / max(1, counts["runs"]), text=f"{ended} of {counts['runs']} runs ended"
                + (f" ({counts['stopped']} failed or cancelled)" if counts["stopped"] else "") + left)
    st.info(studies_view.answer(record, frame, metric), icon=":material/lightbulb:")
    figures = studies_view.beside(record, frame)
    if figures is not None:
        st.caption("Such reports' figures beside this run's (theirs are of their data: compare the trend, "
                   "not the numbers):")
        st.dataframe(figures, hide_index=True, width="stretch", key="study_beside_table")
    for title, chart in studies_view.charts(record, frame, metric):
        st.altair_chart(chart, width="stretch", key=f"study_chart_{title}")
    metrics = studies_view.table_metrics(record, metric)
    st.dataframe(studies_view.table(record, frame, metrics), hide_index=True, width="stretch",
                 key="study_results_table")
    for label, rows in studies_view.layer_tables(store, record):
        layer_table.layers_expander(rows, title=f"Layers of {label}: output shape, parameters and MACs")
    failed = studies_view.failure_reasons(store, record)
    if failed:
        st.warning(failed, icon=":material/error:")


def study_time_left(store, record: dict, past: list) -> float | None:
    """Seconds until the study's last run should end, the runs queued ahead of its own included."""
    manager = common.job_manager()
    active = runs_view.active_runs(store)
    ends = runs_view.queue_times(active, {run.id: manager.progress(run.id) for run in active}, past,
                                 slots=manager.max_concurrent)
    return runs_view.last_end(ends, [entry["run_id"] for entry in record["runs"]])


def report_section(store, record: dict, metric: str, active: bool) -> None:
    if active:
        st.caption("Runs are still training: the report holds what has finished so far.")
    cols = st.columns(3)
    name = record["id"]
    cols[0].download_button("Report (HTML)", lambda: study_report.report_html(
        studies_view.report(store, record, metric)), file_name=f"{name}.html", mime="text/html",
        icon=":material/description:", key="study_report_html")
    cols[1].download_button("Report (Markdown + charts, zip)", lambda: study_report.report_zip(
        studies_view.report(store, record, metric)), file_name=f"{name}-report.zip", mime="application/zip",
        icon=":material/archive:", key="study_report_zip")
    if cols[2].button("Open its sweep on Sweeps", icon=":material/tune:", key="study_open_sweep"):
        st.session_state[sweep_form.VIEW_KEY] = record["id"]
        st.switch_page(common.PAGE_PATHS["sweeps"])


main()
