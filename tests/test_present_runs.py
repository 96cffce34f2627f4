"""What the pages say about runs, without Streamlit (core.present.runs, core.present.compare's text
tables, core.present.diagnose): names, the queue, failures, resuming, the runs to compare, and the
runs tables' text with '—' for an empty cell."""
import pandas as pd
import pytest

from core.ml.diagnosis import Diagnosis
from core.present import compare, diagnose
from core.present import runs as runs_view


def test_names_and_the_queue_in_running_order(store, make_run):
    first, done = make_run("queued", name="first"), make_run("done")
    second = make_run("running", name="second", epochs=4)
    assert first.display_name() == "first"
    assert store.create({"name": ""}, name="").display_name() == store.list()[0].id  # no name: its id
    assert [r.id for r in runs_view.active_runs(store)][:2] == [first.id, second.id]
    assert done.id not in [r.id for r in runs_view.active_runs(store)]


def test_a_launched_run_never_takes_a_name_another_run_goes_by(store, make_run):
    from core.settings.config import TrainConfig
    make_run("done", name="baseline")
    make_run("done", name="baseline-2")
    make_run("done", name="old").annotate(name="renamed")  # the name people see counts, not the config's
    config, note = runs_view.named_uniquely(TrainConfig(name="baseline"), store)
    assert (config.name, note) == ("baseline-3", "A run named baseline exists: this one is named baseline-3.")
    assert runs_view.named_uniquely(TrainConfig(name="baseline-2"), store)[0].name == "baseline-3"
    assert runs_view.named_uniquely(TrainConfig(name="renamed"), store)[0].name == "renamed-2"
    fresh = TrainConfig(name="old")
    assert runs_view.named_uniquely(fresh, store) == (fresh, None)  # its run goes by 'renamed' now
    assert runs_view.unique_name("", {""}) == ""  # no name: the run is named by its unique id


def test_the_time_left_of_each_run_in_the_queue(store, make_run):
    from core.present import estimate
    make_run("done", name="finished")  # 3 epochs of 2 s in a 30 s run: 24 s of loading and evaluating
    live = make_run("running", name="live", epochs=4)
    queued, later = make_run("queued", name="next", epochs=3), make_run("queued", name="later", epochs=5)
    progress = {live.id: {"state": "running", "eta_s": 95.0}, queued.id: {"state": "queued"},
                later.id: {"state": "queued"}}
    active = runs_view.active_runs(store)
    ends = runs_view.queue_times(active, progress, estimate.past_runs(store))
    assert ends == pytest.approx({live.id: 95.0, queued.id: 95.0 + 3 * 2 + 24, later.id: 125.0 + 5 * 2 + 24})
    assert runs_view.time_left_text(ends[queued.id]) == "about 2 min 5 s left"
    # A group of runs (a study) ends with its last one; a finished member has no time left to add.
    assert runs_view.last_end(ends, [live.id, queued.id, "finished-run"]) == pytest.approx(125.0)
    assert runs_view.last_end(ends, ["finished-run"]) is None
    assert runs_view.queue_summary(ends).startswith("3 runs queued or running: the last should end in about 2 min 39 s")
    two_slots = runs_view.queue_times(active, progress, estimate.past_runs(store), slots=2)
    assert two_slots[later.id] == pytest.approx(3 * 2 + 24 + 5 * 2 + 24)  # the queued pair shares one slot
    no_past = runs_view.queue_times(active, progress, [])
    assert no_past == {live.id: 95.0, queued.id: None, later.id: None}
    assert runs_view.time_left_text(None) == "time left known once it trains"
    assert runs_view.last_end(no_past, [live.id, queued.id]) is None
    assert "the time left is known once each trains" in runs_view.queue_summary(no_past)


def test_a_queue_line_says_state_epoch_and_stopping(make_run):
    run = make_run("running", name="live", epochs=4)
    assert runs_view.queue_entry(run, {"state": "running", "epoch": 1, "epochs": 4}, False) == \
        ("**live** — running, epoch 2 of 4", 0.5)
    assert runs_view.queue_entry(run, {"state": "running", "epoch": 1, "epochs": 4}, True)[0] == \
        "**live** — running (stopping after the current batch), epoch 2 of 4"
    assert runs_view.queue_entry(run, {"state": "queued"}, False) == ("**live** — queued", None)


def test_only_failed_and_interrupted_runs_have_a_failure_line():
    assert runs_view.failure("a", {"state": "failed", "error": "out of memory"}) == "**a** failed: out of memory"
    assert runs_view.failure("b", {"state": "interrupted"}) == "**b** interrupted: no reason recorded"
    assert runs_view.failure("c", {"state": "done", "error": "old"}) is None


def test_resuming_reports_each_run_it_could_not_resume(manager, make_run):
    done = make_run("done")  # finished: nothing to resume
    resumed, problems = runs_view.resume_runs([done.id, "no-such-run"], manager.resume)
    assert resumed == [] and len(problems) == 2
    assert f"run {done.id} is done and has no completed epoch to resume from" in problems[0]
    assert "no-such-run" in problems[1]
    report = runs_view.resume_report(resumed, problems)
    assert report["failed"] and report["text"] == " ".join(problems)
    assert runs_view.resume_report(["x"], []) == {
        "failed": False, "text": "Queued 1 run(s) to resume: follow them on the Train page."}


def test_the_runs_to_compare():
    table = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "state": ["done", "failed", "done", "done"]})
    assert runs_view.compare_choice(None, [], None, table) == ["a", "c"]  # the two latest finished runs
    assert runs_view.compare_choice(["a", "c"], ["b", "d"], None, table) == ["b", "d"]  # a new selection wins
    assert runs_view.compare_choice(["a"], ["b", "d"], ["b", "d"], table) == ["a"]  # the same one: the user's pick
    assert runs_view.compare_choice(["a", "gone"], [], None, table) == ["a"]
    assert runs_view.compare_choice(None, list("abcd") * 2, None, table, limit=3) == ["a", "b", "c"]


def test_a_common_split_result_is_keyed_by_the_runs_models_and_reference(make_run):
    a, b = make_run("done"), make_run("done")
    assert runs_view.common_split_key([b, a], a) == runs_view.common_split_key([a, b], a)
    assert runs_view.common_split_key([a, b], a) != runs_view.common_split_key([a, b], b)


def test_runs_tables_as_text_show_a_dash_for_an_empty_cell(make_run):
    runs = [make_run("done", name="done", learning_rate=0.001), make_run("running", name="live", epochs=4)]
    table = compare.runs_table([compare.run_row(r.describe(), r.config()) for r in runs])
    shown = compare.runs_as_text(table, ["name", "epochs", "learning_rate", "test_accuracy", "created"]).set_index("name")
    assert shown.loc["live", "test_accuracy"] == compare.MISSING == "—"
    assert shown.loc["done", "test_accuracy"] == "%.3f" % table.set_index("name").loc["done", "test_accuracy"]
    assert (shown.loc["done", "learning_rate"], shown.loc["live", "epochs"]) == ("1e-03", "4")
    assert shown.loc["done", "created"] == table.set_index("name").loc["done", "created"].strftime("%Y-%m-%d %H:%M")


def test_side_by_side_numbers_as_text():
    frame = pd.DataFrame({"a": [0.81234, None, 7.0], "b": [0.5, 0.25, None]}, index=["auc", "recall", "best_epoch"])
    shown = compare.as_text(frame, 3, whole_rows=("best_epoch",))
    assert shown.to_dict() == {"a": {"auc": "0.812", "recall": "—", "best_epoch": "7"},
                               "b": {"auc": "0.500", "recall": "0.250", "best_epoch": "—"}}


def test_roc_curves_only_for_runs_with_a_disease_vs_normal_view(make_run):
    with_predictions = make_run("done")
    curves = compare.roc_curves({"a": with_predictions.predictions("test"), "b": None})
    assert list(curves) == ["a"] and curves["a"]


def test_what_the_diagnose_page_says(make_run):
    from PIL import Image
    image = Image.new("L", (8, 8))
    result = Diagnosis(file="x.png", image=image, probabilities={"NORMAL": 0.2, "PNEUMONIA": 0.8},
                       predicted="PNEUMONIA", score=0.8)
    assert diagnose.headline(result, 0.5) == "**x.png**: predicted **PNEUMONIA** (disease score 0.800 vs threshold 0.50)"
    assert diagnose.headline(result, None) == "**x.png**: predicted **PNEUMONIA** (disease score 0.800)"
    assert diagnose.threshold_origin(None) == "The run saved no threshold, so it starts at 0.5."
    assert diagnose.threshold_origin(0.42) == "The run's best-F1 threshold on validation is 0.42."
    run = make_run("done", name="base", image_size=32)
    assert diagnose.run_label(run, "", True) == f"base · {run.config()['arch']} · 32 px · best"
    spec = diagnose.probability_chart(result).to_dict()
    assert spec["title"] == "Class probabilities: x.png"
    assert spec["encoding"]["color"]["condition"]["value"] == diagnose.PREDICTED_COLOR
    frame = diagnose.results_frame([result], lambda img: f"data:{img.size[0]}")
    assert frame.loc[0, "thumbnail"] == "data:8" and "file" in frame


@pytest.fixture(autouse=True)
def no_spare_process(monkeypatch):
    monkeypatch.setenv("CXR_SPARE_PROCESS", "0")


def test_diagnose_offers_the_tasks_of_the_runs_binary_first(make_run):
    from PIL import Image
    runs = [make_run("done", task="subtype", class_names=("normal", "bacterial", "viral")), make_run("done")]
    tasks = diagnose.tasks_of(runs)
    assert tasks == ["binary", "subtype"] and diagnose.default_task(tasks) == "binary"
    assert diagnose.default_task(["subtype"]) == "subtype"
    assert diagnose.runs_of_task(runs, "subtype") == [runs[0]]
    huge = Image.new("L", (4000, 2000))
    assert diagnose.display_copy(huge).size == (1600, 800) and huge.size == (4000, 2000)
