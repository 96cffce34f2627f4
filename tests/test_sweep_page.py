"""The Sweeps page, entered through app.py, in Streamlit's AppTest, with real runs:
empty state, bad values, a real 2-point sweep launched, trained and viewed, export and import."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from core.present.sweeps import sweep_zip_bytes
from core.store.run_folder import ACTIVE_STATES
from core.store.runs import RunStore
from core.store.sweeps import list_sweeps
from tests import apptest_support
from tests.synthetic import make_chest_folder
from tests.conftest import wait_until

TIMEOUT = 120  # launching imports Keras to validate every point


def open_page() -> AppTest:
    return apptest_support.open_page("pages/sweeps.py", timeout=TIMEOUT)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def texts(at: AppTest) -> str:
    shown = [m.value for kind in (at.info, at.success, at.caption, at.markdown) for m in kind]
    return "\n".join(shown + [p.proto.text for p in at.get("progress")])


@pytest.fixture
def tiny_base(tmp_path) -> dict:
    folder = make_chest_folder(tmp_path / "xrays", n_patients=10)
    return {"arch": "seed_cnn", "image_size": 32, "epochs": 1, "batch_size": 16, "data_source": "folder",
            "data_path": str(folder), "arch_params": {"dense_units": 8}}


def set_up(at: AppTest, base: dict, values: str, seeds: int = 1, name: str = "") -> AppTest:
    """Fill the form: base JSON, dropout values, seeds per point, name."""
    at.text_area(key="sweep_base_json").set_value(json.dumps(base))
    at.text_input(key="sweep_axis1_values").set_value(values)
    at.number_input(key="sweep_seeds").set_value(seeds)
    at.text_input(key="sweep_name").set_value(name)
    return at.run()


def wait_for(store: RunStore, run_ids: list[str], timeout: float = 240) -> None:
    wait_until(lambda: not any(store.get(r).state() in ACTIVE_STATES for r in run_ids), timeout,
               "the sweep's runs to finish")


def results_table(at: AppTest):
    return next(d.value for d in at.dataframe if "runs done" in d.value.columns)


def test_empty_store_shows_what_to_do(app_env):
    at = open_page()
    assert not errors(at)
    assert "No sweeps yet" in texts(at)
    assert at.button(key="sweep_launch_button")  # the default form is valid and launchable
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs"] == "12"  # 4 dropout values x 3 seeds
    assert metrics["Estimated time"] == "after the first epoch"  # nothing finished to learn from yet
    assert "no finished run on this machine" in texts(at) and "unknown" not in texts(at)


def test_bad_values_show_an_error_and_lose_nothing(app_env, tiny_base):
    at = set_up(open_page(), tiny_base, "0.2,,0.4")
    assert any("empty value" in e for e in errors(at))
    at = set_up(at, tiny_base, "0.2, 1.5")  # out of the declared range: refused before any launch
    assert errors(at) == ["Setting 1 (dropout): dropout must be empty (None) or a number between 0 and 0.9; "
                          "got 1.5"], errors(at)
    assert not [b for b in at.button if b.key == "sweep_launch_button"]
    assert at.text_input(key="sweep_axis1_values").value == "0.2, 1.5"
    assert json.loads(at.text_area(key="sweep_base_json").value) == tiny_base
    assert list_sweeps(RunStore(app_env)) == []
    at.text_area(key="sweep_base_json").set_value("{not json").run()
    assert any("not valid JSON" in e for e in errors(at))


@pytest.mark.slow
def test_launch_view_compare_export_and_import(app_env, tiny_base, tmp_path, monkeypatch):
    at = set_up(open_page(), tiny_base, "0.2, 0.4", seeds=1, name="dropout study")
    at.button(key="sweep_launch_button").click().run()
    assert not errors(at), errors(at)
    store = RunStore(app_env)
    [record] = list_sweeps(store)
    run_ids = [entry["run_id"] for entry in record["runs"]]
    assert len(run_ids) == 2 and record["name"] == "dropout study"
    assert {store.get(r).config()["sweep_id"] for r in run_ids} == {record["id"]}
    assert {store.get(r).config()["dropout"] for r in run_ids} == {0.2, 0.4}
    assert "Sweep dropout study: " in texts(at)  # its progress, right under the Launch button
    wait_for(store, run_ids)

    at.run()  # the view of the finished sweep
    assert not at.exception and not errors(at), errors(at)
    table = results_table(at)
    assert list(table["dropout"]) == ["0.2", "0.4"] and list(table["runs done"]) == ["1/1", "1/1"]
    assert all(cell.endswith("± 0.000") for cell in table["Test accuracy"])
    assert {m.label: m.value for m in at.metric}["Done"] == "2"
    assert at.get("vega_lite_chart"), "the results chart is drawn"
    assert "About " in texts(at)  # the estimate now learns from the finished runs
    assert "Sweep dropout study finished: 2 of 2 runs done" in texts(at)

    at.button(key="sweep_compare_button").click().run()
    assert sorted(at.session_state["runs_compare_ids"]) == sorted(run_ids)

    # Export, then import into a fresh store: the sweep comes back with its runs.
    content = sweep_zip_bytes(store, record["id"])
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "other-runs"))
    at = open_page()
    at.file_uploader(key="sweep_import_upload_zip").set_value(("study.zip", content, "application/zip"))
    at.run()
    at.button(key="sweep_import_button").click().run()
    assert not errors(at), errors(at)
    assert f"Imported 2 runs and sweep `{record['id']}`." in texts(at)
    assert list(results_table(at)["runs done"]) == ["1/1", "1/1"]
    at.button(key="sweep_import_button").click().run()  # the same zip again: nothing is duplicated
    assert not errors(at), errors(at)
    assert "Nothing new imported; 2 runs already here, skipped" in texts(at)
    assert len(RunStore(tmp_path / "other-runs").list()) == 2 and len(list_sweeps(RunStore(tmp_path / "other-runs"))) == 1


def test_a_refused_import_shows_why(app_env):
    at = open_page()
    at.file_uploader(key="sweep_import_upload_zip").set_value(("runs.zip", b"not a zip at all", "application/zip"))
    at.run()
    at.button(key="sweep_import_button").click().run()
    assert any("runs.zip was not imported: not a zip file" in e for e in errors(at)), errors(at)


@pytest.mark.slow
def test_a_running_sweep_can_be_stopped(app_env, tiny_base):
    at = set_up(open_page(), {**tiny_base, "epochs": 200, "early_stopping": False}, "0.2, 0.4")
    at.button(key="sweep_launch_button").click().run()
    assert not errors(at), errors(at)
    store = RunStore(app_env)
    run_ids = [entry["run_id"] for entry in list_sweeps(store)[0]["runs"]]
    at.button(key="sweep_stop_button").click().run()
    wait_for(store, run_ids, timeout=120)
    assert {store.get(r).state() for r in run_ids} == {"cancelled"}
    at.run()
    assert {m.label: m.value for m in at.metric}["Failed or cancelled"] == "2"
    assert "Stop this sweep" not in [b.label for b in at.button]


def test_grid_over_folds_from_an_existing_run(app_env, make_run):
    run = make_run("done", name="baseline", image_size=32, epochs=3, dropout=0.3)
    at = open_page()
    at.selectbox(key="sweep_base_source").set_value("run").run()
    at.selectbox(key="sweep_base_run").set_value(run.id).run()
    base = json.loads(at.text_area(key="sweep_base_json").value)
    assert (base["image_size"], base["dropout"], base["name"]) == (32, 0.3, "")
    at.checkbox(key="sweep_two_axes").check().run()
    at.selectbox(key="sweep_axis2_setting").set_value("optimizer").run()
    assert at.text_input(key="sweep_axis2_values").value == "adam, sgd, rmsprop"  # the preset fills in
    at.radio(key="sweep_repeat_mode").set_value("cv").run()
    at.number_input(key="sweep_folds").set_value(3).run()
    assert not errors(at), errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Points"], metrics["Runs"]) == ("12", "36")  # 4 dropouts x 3 optimizers x 3 folds
    assert metrics["Estimated time"] not in ("unknown", "after the first epoch")  # learned from the finished run
    at.selectbox(key="sweep_axis2_setting").set_value("dropout").run()
    assert any("must differ" in e for e in errors(at))


def finished_grid(store) -> dict:
    """A finished 2 x 2 x 2 sweep (optimizer x learning rate x epochs), its runs as the trainer leaves them."""
    import time

    from core.files import write_json
    from core.store.sweeps import Sweep, sweeps_dir
    from tests.conftest import write_run
    sweep = Sweep.from_dict({"name": "grid", "base": {"arch": "seed_cnn"}, "axes": [
        {"setting": "optimizer", "values": ["adam", "sgd"]}, {"setting": "learning_rate", "values": [0.01, 0.001]},
        {"setting": "epochs", "values": [1, 2]}]})
    record = {"id": "sweep-20260101-000000", "created": time.time(), **sweep.to_dict(), "runs": []}
    for config in sweep.configs(record["id"]):
        run = write_run(store, **{k: v for k, v in config.to_dict().items() if k not in ("name", "seed")})
        point = {"optimizer": config.optimizer, "learning_rate": config.learning_rate, "epochs": config.epochs}
        record["runs"].append({"run_id": run.id, "point": point, "seed": config.seed, "fold": 0})
    write_json(sweeps_dir(store) / f"{record['id']}.json", record)
    return record


def test_a_three_setting_grid_is_planned_and_its_results_drawn_in_panels(app_env, store):
    finished_grid(store)
    at = open_page()
    at.checkbox(key="sweep_two_axes").check().run()
    at.checkbox(key="sweep_three_axes").check().run()
    for index, (setting, values) in enumerate((("optimizer", "adam, sgd, rmsprop"), ("learning_rate", "0.01, 0.001"),
                                               ("epochs", "2, 4")), 1):
        at.selectbox(key=f"sweep_axis{index}_setting").set_value(setting).run()
        at.text_input(key=f"sweep_axis{index}_values").set_value(values).run()
    apptest_support.assert_clean(at)
    planned = [m.value for m in at.metric][:2]  # the form's preview comes before the results' counts
    assert planned == ["12", "36"]  # 3 x 2 x 2 points x 3 seeds
    assert at.button(key="sweep_launch_button")
    table = results_table(at)
    assert list(table.columns[:3]) == ["optimizer", "learning_rate", "epochs"] and len(table) == 8
    [chart] = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert chart["facet"]["field"] == "epochs" and chart["columns"] == 2
    assert chart["title"] == ("Test accuracy against optimizer, one line per learning_rate, "
                              "one panel per epochs")
    at.selectbox(key="sweep_axis3_setting").set_value("optimizer").run()
    assert "The three swept settings must differ." in errors(at)
