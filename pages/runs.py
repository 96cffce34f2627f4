"""Runs & Compare: every run in a sortable, filterable table (delete, CSV export), and 2-6 runs
side by side: curves, metrics, config diff, confusion matrices, ROC and parallel coordinates."""
import pandas as pd
import streamlit as st

from core.ml import common_split
from core.ml import metrics as metrics_lib
from core.present import charts, compare
from core.store.runs import ACTIVE_STATES, STATES
from pages import common

COMPARE_KEY = "runs_compare_ids"
MAX_COMPARE = 6
COMMON_RESULTS_KEY = "compare_common_test_results"  # {selection key: result}, kept for the session
COMPARE_METRICS = ("test_accuracy", "test_macro_f1", "test_auc", "val_accuracy", "best_val_loss",
                   "peak_memory_mb", "images_per_sec", "wall_s")
TABLE_COLUMNS = {
    "name": st.column_config.TextColumn("name", pinned=True),
    "learning_rate": st.column_config.NumberColumn("lr", format="%.0e"),
    "best_val_loss": st.column_config.NumberColumn("best val loss", format="%.4f"),
    "val_accuracy": st.column_config.NumberColumn("val acc", format="%.3f"),
    "test_accuracy": st.column_config.NumberColumn("test acc", format="%.3f"),
    "test_macro_f1": st.column_config.NumberColumn("test macro-F1", format="%.3f"),
    "test_auc": st.column_config.NumberColumn("test AUC", format="%.3f"),
    "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
    "peak_memory_mb": st.column_config.NumberColumn("peak memory (MB)", format="%.0f",
                                                    help="Peak resident memory of the run's training process"),
    "images_per_sec": st.column_config.NumberColumn("images/s", format="%.0f",
                                                    help="Training speed (median of the epochs after the first)"),
    "device": st.column_config.TextColumn("device"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
}
# What a run used (Run.describe()), shown after its duration.
RESUME_REPORT_KEY = "resume_report"  # no form prefix: a message, not a setting to keep


# ----------------------------------------------------------------------------- the table

def runs_frame(runs):
    """The runs table with what each run used (peak memory, images/s, device) after its duration."""
    return compare.runs_table([compare.run_row(run.describe(), run.config()) for run in runs])


def filters(table):
    cols = st.columns([2, 2, 3])
    states = cols[0].multiselect("State", STATES, key="runs_filter_states", placeholder="all states")
    archs = cols[1].multiselect("Architecture", sorted(table["arch"].dropna().unique()),
                                key="runs_filter_archs", placeholder="all architectures")
    text = cols[2].text_input("Name contains", key="runs_filter_text")
    return compare.filter_runs(table, states, archs, text)


def runs_table(table):
    """The table; selecting rows picks runs to compare. Returns the selected run ids."""
    event = st.dataframe(table, hide_index=True, column_config=TABLE_COLUMNS, on_select="rerun",
                         selection_mode="multi-row", key="runs_table")
    rows = event.selection.rows if event else []
    return [table.iloc[i]["run_id"] for i in rows]


def table_actions(table, selected: list[str]) -> None:
    cols = st.columns([1, 1, 3])
    cols[0].download_button("Export CSV", compare.table_csv(table), file_name="cxr_runs.csv",
                            mime="text/csv", icon=":material/download:")
    if selected and cols[1].button(f"Delete {len(selected)} selected", icon=":material/delete:", key="runs_delete_button"):
        st.session_state["runs_confirm_delete"] = list(selected)
    if len(selected) == 1 and cols[2].button("Re-run: open its settings in Train", icon=":material/replay:",
                                              key="runs_rerun_button"):
        st.session_state[common.RERUN_CONFIG_KEY] = common.run_store().get(selected[0]).config()
        st.switch_page(common.PAGE_PATHS["train"])
    resumable = [r for r in selected if common.run_store().get(r).can_resume()]
    if resumable:
        st.button(f"Resume {len(resumable)} selected from their last completed epoch", key="runs_resume_button",
                  icon=":material/play_circle:", on_click=resume, args=(resumable,),
                  help="Queue them again: each goes on from its last checkpoint (weights and optimizer state).")
    report = st.session_state.pop(RESUME_REPORT_KEY, None)
    if report:
        (st.error if report["failed"] else st.success)(report["text"])
    pending = st.session_state.get("runs_confirm_delete")
    if pending:
        confirm_delete(pending)


def resume(run_ids: list[str]) -> None:
    """Queue the runs again to go on from their checkpoints (a button callback)."""
    resumed, problems = common.resume_runs(run_ids)
    text = f"Queued {len(resumed)} run(s) to resume: follow them on the Train page." if resumed else ""
    st.session_state[RESUME_REPORT_KEY] = {"failed": bool(problems),
                                           "text": " ".join([text, *problems]).strip()}


def failure_reasons(run_ids: list[str]) -> None:
    """Why each selected run failed or was interrupted, with what its training process printed last."""
    store = common.run_store()
    for run_id in run_ids:
        run = store.get(run_id)
        status = run.status()
        if status.get("state") not in ("failed", "interrupted"):
            continue
        st.error(f"**{common.run_name(run)}** {status['state']}: {status.get('error') or 'no reason recorded'}")
        if status.get("stderr_tail"):
            with st.expander(f"What the training process of {common.run_name(run)} printed"):
                st.code(status["stderr_tail"], language=None)


def confirm_delete(run_ids: list[str]) -> None:
    st.warning(f"Delete {len(run_ids)} run(s) and all their files? This cannot be undone.")
    cols = st.columns([1, 1, 4])
    if cols[0].button("Yes, delete", type="primary", key="runs_confirm_button"):
        store = common.run_store()
        for run_id in run_ids:
            try:
                store.delete(run_id)
            except (KeyError, RuntimeError) as exc:
                st.error(str(exc))
        st.session_state.pop("runs_confirm_delete", None)
        st.session_state.pop(COMPARE_KEY, None)
        st.rerun()
    if cols[1].button("Keep them", key="runs_cancel_delete_button"):
        st.session_state.pop("runs_confirm_delete", None)
        st.rerun()


# ----------------------------------------------------------------------------- comparison

def choose_runs(table, selected: list[str]) -> list[str]:
    """Runs to compare: the table selection when there is one, else the multiselect (which
    starts with the latest finished runs)."""
    names = dict(zip(table["run_id"], table["name"]))
    if selected and selected != st.session_state.get("runs_last_selection"):
        st.session_state[COMPARE_KEY] = [r for r in selected if r in names][:MAX_COMPARE]
    st.session_state["runs_last_selection"] = selected
    if COMPARE_KEY not in st.session_state:
        done = table[table["state"] == "done"]["run_id"].tolist()
        st.session_state[COMPARE_KEY] = done[:2]
    st.session_state[COMPARE_KEY] = [r for r in st.session_state[COMPARE_KEY] if r in names]
    return st.multiselect("Runs to compare (2 to 6; or select rows in the table)", list(names),
                          format_func=lambda r: f"{names[r]} ({r})", key=COMPARE_KEY,
                          max_selections=MAX_COMPARE)


def comparison(run_ids: list[str]) -> None:
    store = common.run_store()
    runs = [store.get(r) for r in run_ids]
    labels = compare.unique_names([common.run_name(r) for r in runs])
    for run, label in zip(runs, labels):
        status = run.status()
        if status.get("state") in ("failed", "interrupted"):
            st.error(f"**{label}** {status['state']}: {status.get('error')}")
            if status.get("traceback"):
                with st.expander(f"Traceback of {label}"):
                    st.code(status["traceback"])
    curves(runs, labels)
    test_set_warning(runs, labels)
    side_by_side_metrics(runs, labels)
    common_test_split(runs, labels)
    config_difference(runs, labels)
    confusion_matrices(runs, labels)
    roc_overlay(runs, labels)
    parallel_coordinates(runs, labels)


def curves(runs, labels) -> None:
    """Loss and accuracy overlaid; refreshed every 2 s while one of the runs is training."""
    live = any(r.state() in ACTIVE_STATES for r in runs)

    @st.fragment(run_every=2 if live else None)
    def draw():
        histories = {label: run.history() for run, label in zip(runs, labels)}
        if not any(histories.values()):
            st.info("No finished epochs yet in these runs.")
            return
        left, right = st.columns(2)
        common.show_chart(charts.compare_history_chart(histories, "loss"), left)
        common.show_chart(charts.compare_history_chart(histories, "accuracy"), right)

    st.subheader("Training curves")
    draw()


def test_set_warning(runs, labels) -> None:
    """Say plainly when the runs were not scored on the same test images."""
    differences = common_split.test_set_differences({label: run.config() for run, label in zip(runs, labels)})
    if differences:
        lines = "\n".join(f"- {line}" for line in common_split.describe_differences(differences))
        st.warning("**These runs were tested on different test sets (or saw them differently)**, so their "
                   "saved metrics below are not directly comparable:\n" + lines +
                   "\n\nUse **Score on one common test split** below for a fair comparison.",
                   icon=":material/warning:")


def side_by_side_metrics(runs, labels) -> None:
    st.subheader("Metrics")
    split = st.radio("Split", ("test", "val"), horizontal=True, key="runs_metrics_split")
    summaries = {label: run.summary() for run, label in zip(runs, labels)}
    for line in compare.never_predicted_warnings(summaries, split):
        st.warning(line, icon=":material/visibility_off:")
    frame = compare.metrics_side_by_side(summaries, split)
    st.dataframe(as_text(frame, 4, whole_rows=("best_epoch", "seconds")))
    st.caption("auc: disease vs normal where the classes have that view (else macro one-vs-rest); "
               "macro_ovr_auc: each class against the rest, averaged, so a class the model never "
               "finds pulls it down; recall: the share of each class that was found.")


def common_test_split(runs, labels) -> None:
    """Score the chosen runs on one common test split (the reference's unseen test patients)."""
    st.subheader("Score on one common test split")
    st.caption("Takes the test patients of a reference run, removes every patient that any of these "
               "runs trained or validated on, and scores each run's model on the remaining images at "
               "its own image size and colour mode (most likely class decides).")
    by_label = dict(zip(labels, runs))
    if st.session_state.get("runs_common_reference") not in labels:  # another selection of runs
        st.session_state.pop("runs_common_reference", None)
    reference = st.selectbox("Reference run (whose test patients are the starting point)", labels,
                             key="runs_common_reference")
    selection = (tuple(sorted((run.id, _model_time(run)) for run in runs)), by_label[reference].id)
    results = st.session_state.setdefault(COMMON_RESULTS_KEY, {})
    if st.button("Score these runs on one common test split", icon=":material/balance:",
                 key="runs_common_button"):
        results[selection] = _score_common(by_label, reference)
    result = results.get(selection)
    if result is None:
        return
    if isinstance(result, str):
        st.warning(result)
        return
    st.success(f"Common test set: {result['test_set'].describe()}")
    table = pd.DataFrame(common_split.scores_table(result["scores"])).set_index("run")
    st.dataframe(as_text(table, 3, whole_columns=("images", "patients")))
    for label, score in result["scores"].items():
        for note in metrics_lib.never_predicted_notes(score["metrics"]):
            st.warning(f"{label}: {note}", icon=":material/visibility_off:")
    st.caption("95% CI: bootstrap over patients (500 resamples). Runs with different tasks are scored "
               "against their own labels for the same images.")


def as_text(frame: pd.DataFrame, digits: int, whole_rows=(), whole_columns=()) -> pd.DataFrame:
    """Numbers as fixed-precision text and missing values as '—' (st.dataframe would print 'None'
    for a recall a run does not have, e.g. a binary run next to a 3-class one)."""
    def cell(value, whole):
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "—"
        if isinstance(value, (int, float)):
            return f"{value:.0f}" if whole else f"{value:.{digits}f}"
        return str(value)
    return pd.DataFrame({column: [cell(v, row in whole_rows or column in whole_columns)
                                  for row, v in frame[column].items()] for column in frame.columns},
                        index=frame.index)


def _model_time(run) -> float:
    return run.model_path.stat().st_mtime if run.has_model() else 0.0


def _score_common(by_label: dict, reference: str):
    """The scores, or a message saying why the runs cannot be scored together."""
    bar = st.progress(0.0, text="Rebuilding the runs' splits…")
    try:
        return common_split.score_runs(by_label, reference, lambda text, share: bar.progress(share, text=text))
    except (ValueError, OSError) as exc:  # CommonSplitError, DataError, a missing dataset or model
        return f"Cannot score these runs on one common test split: {exc}"
    finally:
        bar.empty()


def config_difference(runs, labels) -> None:
    st.subheader("Settings that differ")
    diff = compare.config_diff({label: run.config() for run, label in zip(runs, labels)})
    if diff.empty:
        st.caption("These runs have identical settings (apart from their names).")
    else:
        st.dataframe(diff)


def confusion_matrices(runs, labels) -> None:
    st.subheader("Confusion matrices (test)")
    cols = st.columns(len(runs))
    for col, run, label in zip(cols, runs, labels):
        test = (run.summary().get("test") or {})
        with col:
            if test.get("confusion_matrix") is None:
                st.caption(f"{label}: no test results yet")
                continue
            names = run.summary().get("class_names") or []
            common.show_chart(charts.confusion_matrix_chart(test["confusion_matrix"], names, title=label))


def roc_overlay(runs, labels) -> None:
    st.subheader("ROC curves (test)")
    curves_by_run = {}
    for run, label in zip(runs, labels):
        predictions = run.predictions("test")
        if predictions is None:
            continue
        curve = metrics_lib.roc(predictions["probabilities"], predictions["labels"], predictions["class_names"])
        if curve:
            curves_by_run[label] = curve
    if curves_by_run:
        common.show_chart(charts.roc_chart(curves_by_run, "ROC curves, test split (disease vs normal)"))
    else:
        st.caption("No ROC curves: the runs have no test predictions yet, or their classes have no "
                   "disease-vs-normal view.")


def parallel_coordinates(runs, labels) -> None:
    st.subheader("Settings against a metric")
    metric = st.selectbox("Metric", COMPARE_METRICS, key="runs_parallel_metric")
    values = {label: run.describe().get(metric) for run, label in zip(runs, labels)}
    configs = {label: run.config() for run, label in zip(runs, labels)}
    frame = compare.parallel_coordinates_frame(configs, values)
    if frame.empty or frame["axis"].nunique() < 2:
        st.caption("The runs share all settings: nothing to draw.")
        return
    common.show_chart(charts.parallel_coordinates_chart(frame, metric))


# ----------------------------------------------------------------------------- page

def main() -> None:
    st.title("Runs & Compare")
    store = common.run_store()
    runs = store.list()
    if not runs:
        common.no_runs_yet()
        return
    table = runs_frame(runs)
    shown = filters(table)
    selected = runs_table(shown)
    table_actions(shown, selected)
    failure_reasons(selected)
    st.divider()
    st.header("Compare")
    chosen = choose_runs(table, selected)
    if len(chosen) < 2:
        st.info("Pick at least two runs to compare (select rows in the table or use the box above).")
        return
    comparison(chosen)


main()
