"""The Train page's live view: the watched run's progress, Stop, how it ended (why it failed, what it
kept, Resume), its curves, and the queue. Not a page: app.py's navigation lists only the explicit pages."""
import streamlit as st

from core.present import charts, train_view
from core.present import runs as runs_view
from core.workers.manager import stop_option
from ui import common

WATCH_KEY = "watch_run_id"
RESUME_ERROR_KEY = "resume_error"  # no form prefix: a message, never kept or saved with the settings


# ----------------------------------------------------------------------------- which run

def watch(run_id: str) -> None:
    st.session_state[WATCH_KEY] = run_id


def pinned_run(store):
    """The run this view is showing (launched, picked or the first one shown), if it still exists."""
    if not st.session_state.get(WATCH_KEY):
        return None
    try:
        return store.get(st.session_state[WATCH_KEY])
    except KeyError:  # deleted meanwhile
        st.session_state.pop(WATCH_KEY, None)
        return None


def watched_run(store):
    """The run to show live. Once shown, a run stays shown after it ends (done, cancelled or failed)
    until the user picks another one, so a queue never hides how a run ended. With none pinned:
    the running run, else the oldest queued one."""
    pinned = pinned_run(store)
    if pinned is not None:
        return pinned
    active = runs_view.active_runs(store)
    chosen = ([r for r in active if r.state() == "running"] or active or [None])[0]
    if chosen is not None:
        watch(chosen.id)
    return chosen


def launch(config) -> None:
    """Queue the run (renamed when its name is taken); watch it unless another active run is being
    watched (it then waits in the queue)."""
    config, renamed = runs_view.named_uniquely(config, common.run_store())
    if renamed:
        st.info(renamed, icon=":material/edit:")
    try:
        run_id = common.job_manager().submit(config)
    except ValueError as exc:
        st.error(f"The run could not be queued: {exc}")
        return
    shown = pinned_run(common.run_store())
    if shown is None or shown.state() not in ("queued", "running"):
        watch(run_id)
    st.toast(f"Run {run_id} queued")


def rerun_page_when_queue_empties(store) -> None:
    """When the last active run ends, redraw the whole page once (not just this live view), so
    the time estimate and everything else reflect the finished run."""
    active = bool(runs_view.active_runs(store))
    was_active = st.session_state.get("train_queue_was_active", False)
    st.session_state["train_queue_was_active"] = active
    if was_active and not active:
        st.rerun(scope="app")


# ----------------------------------------------------------------------------- the view

def live_view() -> None:
    store = common.run_store()
    rerun_page_when_queue_empties(store)
    run = watched_run(store)
    if run is None:
        st.info("No run in progress. Set up a run above and press **Launch**.")
        return
    manager = common.job_manager()
    progress = manager.progress(run.id)
    state = run.state()
    st.markdown(train_view.headline(run.display_name(), run.id, state, progress.get("phase"),
                                    run.status().get("resumed_at_epochs")))
    for warning in run.status().get("warnings") or []:  # e.g. ImageNet weights offline: base from scratch
        st.warning(warning, icon=":material/cloud_off:")
    if state in ("queued", "running"):
        live_progress(progress)
        stop_control(manager, run, state, progress.get("phase"))
    else:
        finished_result(run)
    history = progress.get("history") or run.history()
    if history:
        curves({run.display_name(): history}, {run.display_name(): run.first_epoch_batches()}, "live")
    elif state in ("queued", "running"):
        st.caption("The curves appear when the first epoch ends.")
    queue_list(store, run.id, ended=state not in ("queued", "running"))


def curves(histories: dict, batches: dict, key: str) -> None:
    """Two charts of the runs' curves, each with its choice of curve, under one smoothing slider
    and one log-scale toggle (also the Runs & Compare page's curves)."""
    options = charts.available_curves(list(histories.values()), any(batches.values()))
    controls = st.columns([3, 3, 3, 2], vertical_alignment="bottom")
    chosen = [controls[side].selectbox(f"{'Left' if side == 0 else 'Right'} chart", options,
                                       index=train_view.default_curve(options, side), format_func=charts.metric_title,
                                       key=f"{key}_curve_{side}") for side in (0, 1)]
    smoothing = controls[2].slider("Smoothing", 0.0, charts.SMOOTHING_MAX, 0.0, 0.01, key=f"{key}_curve_smoothing",
                                   help=train_view.SMOOTHING_HELP)
    log_scale = controls[3].toggle("Log scale", key=f"{key}_curve_log", help=train_view.LOG_SCALE_HELP)
    for column, metric in zip(st.columns(2), chosen):
        common.show_chart(charts.curve_chart(metric, histories, batches, smoothing, log_scale), column)
    note = train_view.missing_curves_note(options)
    if note:
        st.caption(note)


def live_progress(progress: dict) -> None:
    for fraction, text in train_view.progress_bars(progress):
        st.progress(fraction, text=text)
    for col, (label, value) in zip(st.columns(4), train_view.progress_metrics(progress)):
        col.metric(label, value)


def stop_control(manager, run, state: str, phase: str | None) -> None:
    """Stop, or why it is not offered: already stopping, or past the point where stopping helps."""
    option = stop_option(state, phase, manager.stop_requested(run.id))
    if option == "stopping":
        st.warning("Stopping after the current batch… The best epoch so far is kept and evaluated.",
                   icon=":material/hourglass_top:")
    elif option == "finishing":
        st.info("Finishing: evaluating on the test split and saving; it cannot be stopped now.",
                icon=":material/hourglass_top:")
    elif option == "stop":  # a callback, so the rerun it triggers already shows the stopping state
        st.button("Stop this run", key=f"stop_{run.id}", type="secondary", icon=":material/stop_circle:",
                  on_click=manager.cancel, args=(run.id,))


def finished_result(run) -> None:
    """How the run ended: why it failed or stopped, its test scores, what it used, and Resume."""
    status, summary = run.status(), run.summary()
    state = status.get("state")
    if state == "failed":
        failure(status)
    elif state == "cancelled":
        st.warning(train_view.stopped_text(summary, run.has_model()), icon=":material/stop_circle:")
    elif not summary.get("test") and status.get("error"):  # e.g. interrupted before the end
        st.warning(status["error"])
    resume_control(run)
    if summary.get("test") and state != "failed":
        for col, (label, value) in zip(st.columns(4), train_view.score_metrics(summary)):
            col.metric(label, value)
        st.page_link(common.PAGE_PATHS["evaluate"], label="Evaluate this run", icon=":material/fact_check:")
    caption = train_view.result_caption(run.resources(), status.get("resumed_at_epochs") or [])
    if caption:
        st.caption(caption)


def failure(status: dict) -> None:
    """The plain reason a run failed, what its training process printed last and the traceback."""
    st.error(f"The run failed: {status.get('error') or 'no reason was recorded'}")
    for title, text in (("What the training process printed", status.get("stderr_tail")),
                        ("Traceback", status.get("traceback"))):
        if text:
            with st.expander(title):
                st.code(text, language=None)


# ----------------------------------------------------------------------------- resume

def resume_control(run) -> None:
    """'Resume from epoch N' for a run that ended early with a checkpoint (N: the epoch after it)."""
    if not run.can_resume():
        return
    done = run.checkpoint_epoch()
    st.button(f"Resume from epoch {run.resume_epoch()}", key=f"train_resume_{run.id}_button", type="primary",
              icon=":material/play_circle:", on_click=resume_all, args=([run.id],),
              help=f"Queue this run again: it goes on after its last completed epoch ({done}) with the "
                   "weights and optimizer state saved then.")
    problem = st.session_state.pop(RESUME_ERROR_KEY, None)
    if problem:
        st.error(f"The run could not be resumed: {problem}")


def resume_all(run_ids: list[str]) -> None:
    """Queue runs again (a button callback); watch the first one."""
    resumed, problems = common.resume_runs(run_ids)
    if problems:
        st.session_state[RESUME_ERROR_KEY] = " ".join(problems)
    if resumed:
        watch(resumed[0])


def interrupted_notice(store) -> None:
    """Runs cut off when the dashboard or worker training them stopped: one click resumes them."""
    cut_off = [run for run in store.list() if run.state() == "interrupted" and run.can_resume()]
    if not cut_off:
        return
    st.warning(train_view.interrupted_text([run.display_name() for run in cut_off]),
               icon=":material/restart_alt:")
    st.button(f"Resume {len(cut_off)} interrupted run(s)", key="train_resume_interrupted_button",
              icon=":material/play_circle:", on_click=resume_all, args=([run.id for run in cut_off],))


# ----------------------------------------------------------------------------- queue

def queue_list(store, shown_id: str, ended: bool) -> None:
    """Every queued or running run of the store, whoever queued it (this dashboard, another one,
    the CLI or a worker); Stop works for any of them."""
    others = [r for r in runs_view.active_runs(store) if r.id != shown_id]
    if not others:
        return
    if ended:  # the shown run is over; the queue goes on without it
        following = next((r for r in others if r.state() == "running"), others[0])
        st.button(f"Watch next run: {following.display_name()} ({following.state()})",
                  key="train_watch_next_button", type="primary", icon=":material/skip_next:",
                  on_click=watch, args=(following.id,))
    st.markdown("**Queue**")
    manager = common.job_manager()
    for run in others:
        state = run.state()
        cols = st.columns([4, 1, 1])
        resuming = bool(run.status().get("resume"))
        text = train_view.queue_state_text(state, resuming, run.resume_epoch() if resuming else None)
        cols[0].write(f"{run.display_name()} — {text}")
        cols[1].button("Watch", key=f"watch_{run.id}", on_click=watch, args=(run.id,))
        if manager.stop_requested(run.id):
            cols[2].caption("stopping…")
        else:
            cols[2].button("Stop" if state == "running" else "Cancel", key=f"cancel_{run.id}",
                           on_click=manager.cancel, args=(run.id,))
