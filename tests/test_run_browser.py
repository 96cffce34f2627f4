"""The run browser (issue 13, item 1): names, notes, tags and stars kept in annotations.json; the
query line that filters by any setting or metric; a sweep's runs deleted together; the TensorBoard
command; annotations travelling in exported zips; and the Runs page through app.py (filters kept
across a new session, editing, opening a run in Evaluate and Diagnose, deleting a sweep)."""
import json
import shlex
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from core.present import compare, run_query
from core.present import runs as runs_view
from core.store import sweeps, ui_state
from core.store.portable import ImportRefused, export_runs, import_archive
from core.files import write_json
from core.store.annotations import MAX_NOTES_CHARS, MAX_TAGS
from core.store.run_folder import Run
from core.store.runs import RunStore
from tests.apptest_support import assert_clean, assert_no_exception, open_page
from tests.conftest import copy_run, write_run

# ----------------------------------------------------------------------------- annotations

def test_annotations_round_trip_and_leave_the_config_alone(store):
    run = write_run(store, "done", name="trained-name")
    config_bytes = run.config_path.read_bytes()
    saved = run.annotate(name="  Best so far ", notes="Looks good.\nSecond line", tags=" Baseline, AUG,baseline ",
                         starred=True)
    assert saved == {"name": "Best so far", "notes": "Looks good.\nSecond line", "tags": ["baseline", "aug"],
                     "starred": True}
    again = RunStore(store.root).get(run.id)  # read back from disk
    assert again.annotations() == saved
    described = again.describe()
    assert (described["name"], described["tags"], described["starred"]) == ("Best so far", ["baseline", "aug"], True)
    assert described["notes"] == "Looks good. …"
    assert again.display_name() == "Best so far"
    assert run.config_path.read_bytes() == config_bytes


def test_annotating_one_thing_keeps_the_others_and_none_forgets_the_name(store):
    run = write_run(store, "done", name="trained-name")
    run.annotate(name="renamed", tags=["a"])
    run.annotate(starred=True)
    assert run.annotations() == {"name": "renamed", "tags": ["a"], "starred": True}
    run.annotate(name=None)
    assert run.display_name() == "trained-name" and run.describe()["name"] == "trained-name"
    assert run.annotations() == {"tags": ["a"], "starred": True}


def test_a_run_without_annotations_is_named_by_its_config_then_its_id(store):
    named, unnamed = write_run(store, "done", name="cfg"), write_run(store, "done")
    write_json(unnamed.config_path, {**unnamed.config(), "name": ""})
    assert named.display_name() == "cfg" and unnamed.display_name() == unnamed.id
    assert unnamed.describe()["tags"] == [] and unnamed.describe()["starred"] is False


@pytest.mark.parametrize("changes, message", [
    ({"name": "   "}, "name must not be empty"),
    ({"name": "x" * 121}, "at most 120 characters, not 121"),
    ({"name": 3}, "name must not be empty"),
    ({"tags": ["two words"]}, "tag 'two words': a tag is one word"),
    ({"tags": ["x" * 33]}, "at most 32"),
    ({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}, f"at most {MAX_TAGS} tags, not {MAX_TAGS + 1}"),
    ({"tags": [1, 2]}, "tags must be a list of words"),
    ({"notes": "n" * (MAX_NOTES_CHARS + 1)}, f"at most {MAX_NOTES_CHARS} characters"),
    ({"notes": 5}, "notes must be text, not int"),
    ({"starred": "yes"}, "starred must be true or false, not 'yes'"),
    ({"colour": "red"}, "unknown annotation(s): colour"),
])
def test_bad_annotations_are_refused_with_a_clear_message_and_nothing_is_written(store, changes, message):
    run = write_run(store, "done")
    run.annotate(tags=["kept"])
    with pytest.raises(ValueError, match=None) as raised:
        run.annotate(**changes)
    assert message in str(raised.value)
    assert run.annotations() == {"tags": ["kept"]}


def test_a_damaged_annotations_file_reads_as_nothing_said(store):
    run = write_run(store, "done", name="cfg")
    run.annotations_path.write_text('{"tags": "NOT A TAG!"')
    assert run.annotations() == {} and run.describe()["name"] == "cfg"
    write_json(run.annotations_path, ["a", "list"])
    assert run.annotations() == {}


def test_tags_and_stars_change_in_bulk_and_a_bad_tag_changes_no_run(store):
    runs = [write_run(store, "done", seed=i) for i in range(3)]
    runs[0].annotate(tags=["old", "keep"], name="first")
    runs_view.retag(runs, add=["New"], remove=["old"], starred=True)
    assert runs[0].annotations() == {"name": "first", "tags": ["keep", "new"], "starred": True}
    assert [r.annotations() for r in runs[1:]] == [{"tags": ["new"], "starred": True}] * 2
    with pytest.raises(ValueError, match="a tag is one word"):
        runs_view.retag(runs, add=["bad tag"])
    assert runs[1].annotations()["tags"] == ["new"]


# ----------------------------------------------------------------------------- the table and its filters

@pytest.fixture
def browsed(store):
    """Four runs: two seed_cnn and an mlp finished (one with zoom augmentation), one failed."""
    fast = write_run(store, "done", name="fast", seed=0, learning_rate=0.01)
    zoomed = write_run(store, "done", name="zoomed", seed=1, augmentation={"zoom": 0.1})
    mlp = write_run(store, "done", name="mlp-run", seed=2, arch="mlp", optimizer="sgd")
    broken = write_run(store, "failed", name="broken", error="out of memory")
    fast.annotate(tags=["baseline"], starred=True)
    zoomed.annotate(tags=["baseline", "augmented"])
    return {"fast": fast, "zoomed": zoomed, "mlp": mlp, "broken": broken}


def table_of(store):
    runs = store.list()
    configs = {run.id: run.config() for run in runs}
    table = compare.runs_table([compare.run_row(run.describe(), configs[run.id]) for run in runs])
    return table, run_query.query_frame(table, configs)


def names(frame) -> list[str]:
    return sorted(frame["name"])


def test_the_table_shows_star_tags_notes_and_sweep(store, browsed):
    browsed["fast"].annotate(notes="a note")
    table, _ = table_of(store)
    row = table.set_index("name").loc["fast"]
    assert (bool(row["starred"]), row["tags"], row["notes"]) == (True, "baseline", "a note")
    assert list(table.columns) == list(compare.TABLE_COLUMNS)
    assert compare.all_tags(table) == ["augmented", "baseline"]


def test_filters_by_tags_star_and_sweep(store, browsed):
    sweep_run = write_run(store, "done", name="in-sweep", sweep_id="sweep-1")
    table, _ = table_of(store)
    assert names(compare.filter_runs(table, tags=["augmented"])) == ["zoomed"]
    assert names(compare.filter_runs(table, tags=["baseline"])) == ["fast", "zoomed"]
    assert names(compare.filter_runs(table, starred=True)) == ["fast"]
    assert names(compare.filter_runs(table, sweep="sweep-1")) == [sweep_run.config()["name"]]
    rows = [compare.run_row(r.describe(), r.config(), {"sweep-1": "lr study (sweep-1)"}) for r in store.list()]
    assert compare.runs_table(rows).set_index("name").loc["in-sweep", "sweep"] == "lr study (sweep-1)"


@pytest.mark.parametrize("query, expected", [
    ("", ["broken", "fast", "mlp-run", "zoomed"]),
    ("test_auc >= 0", ["fast", "mlp-run", "zoomed"]),  # the failed run has no AUC: an empty cell never matches
    ('arch == "mlp"', ["mlp-run"]),
    ("arch != mlp", ["broken", "fast", "zoomed"]),
    ("arch == mlp and state == done", ["mlp-run"]),
    ("ARCH == mlp", None),  # columns are exact
    ("name contains ZOOM", ["zoomed"]),
    ("tags contains augmented", ["zoomed"]),
    ("starred == true", ["fast"]),
    ("starred == false", ["broken", "mlp-run", "zoomed"]),
    ("learning_rate > 0.005", ["fast"]),
    ("augmentation.zoom >= 0.05", ["zoomed"]),
    ("optimizer == sgd", ["mlp-run"]),
    ("error contains memory", ["broken"]),
    ("name == 'mlp-run' AND epochs == 3", ["mlp-run"]),
    ('name == "a and b"', []),
    ("created >= 2000-01-01", ["broken", "fast", "mlp-run", "zoomed"]),
    ("created < 2000-01-01", []),
])
def test_the_query_line_filters_by_any_setting_or_metric(store, browsed, query, expected):
    table, columns = table_of(store)
    if expected is None:
        with pytest.raises(run_query.QueryError, match="unknown column 'ARCH' \\(did you mean arch"):
            run_query.query_runs(table, query, columns)
        return
    assert names(run_query.query_runs(table, query, columns)) == expected


def test_the_query_compares_numbers_as_numbers(store, browsed):
    table, columns = table_of(store)
    aucs = table.set_index("name")["test_auc"]
    threshold = float(aucs[["fast", "zoomed", "mlp-run"]].median())
    chosen = run_query.query_runs(table, f"test_auc >= {threshold}", columns)
    assert names(chosen) == sorted(aucs[aucs >= threshold].index)
    assert 0 < len(chosen) < 3


@pytest.mark.parametrize("query, message", [
    ("test_aux >= 0.9", "unknown column 'test_aux' (did you mean test_auc"),
    ("nonsense_column == 1", "unknown column 'nonsense_column' (columns: "),
    ("test_auc = 0.9", "unknown operator '=' (did you mean ==?); use one of >=, <=, !=, ==, >, <, contains"),
    ("test_auc => 0.9", "unknown operator '=>' (did you mean >=?)"),
    # operator slips name the operator, not the value that follows it
    ("test_auc >>= x", "'test_auc >>= x': unknown operator '>>=' (did you mean >=?)"),
    ("test_auc > = 0.9", "unknown operator '> =' (did you mean >=?)"),
    ("test_auc =< 0.9", "unknown operator '=<' (did you mean <=?)"),
    ("test_auc <> 0.9", "unknown operator '<>'; use one of"),
    ("test_auc >=", "no value to compare test_auc with"),
    ("test_auc >= high", "test_auc holds numbers: 'high' is not a number"),
    ('test_auc >= "0.9"', "test_auc holds numbers: '0.9' is not a number"),
    ("test_auc contains 9", "test_auc holds numbers: contains works on text columns only"),
    ("arch > cnn", "arch holds text: compare it with ==, != or contains, not >"),
    ("starred >= 1", "starred is true or false: write starred == true or starred == false"),
    ("starred == 1", "starred is true or false"),
    ("created > last week", "created holds times: 'last week' is not a date like 2026-01-31"),
    ('arch == "mlp', "a quote is not closed"),
    ("arch == mlp and", "a condition is missing around 'and'"),
    ("and arch == mlp", "a condition is missing around 'and'"),
    ("just words", "'just words': a condition is a column, an operator and a value"),
    ("test_auc >= 0.5 or arch == mlp", "holds numbers: '0.5 or arch == mlp' is not a number"),
])
def test_every_bad_query_gets_a_message_naming_what_is_wrong(store, browsed, query, message):
    table, columns = table_of(store)
    with pytest.raises(run_query.QueryError) as raised:
        run_query.query_runs(table, query, columns)
    assert message in str(raised.value)


def test_a_column_of_empty_cells_matches_nothing(store, browsed):
    table, columns = table_of(store)
    assert table["node"].isna().all()
    assert run_query.query_runs(table, "node == anything", columns).empty
    assert run_query.query_runs(table, "node != anything", columns).empty


def test_the_query_reads_a_table_without_settings_columns_too():
    table = pd.DataFrame({"name": ["a", "b"], "test_auc": [0.99, None]})
    assert run_query.query_runs(table, "test_auc < 1")["name"].tolist() == ["a"]
    with pytest.raises(run_query.QueryError, match="unknown column 'optimizer'"):
        run_query.query_runs(table, "optimizer == adam")


# ----------------------------------------------------------------------------- deleting a sweep

def sweep_with_runs(store, sweep_id: str, states=("done", "done", "failed")) -> list[Run]:
    runs = [write_run(store, state, name=f"{sweep_id}-{i}", seed=i, sweep_id=sweep_id)
            for i, state in enumerate(states)]
    write_json(sweeps.sweeps_dir(store) / f"{sweep_id}.json",
               {"id": sweep_id, "name": "lr study", "created": time.time(), "axes": [],
                "runs": [{"run_id": run.id, "point": {}} for run in runs]})
    return runs


def test_deleting_a_sweep_deletes_its_runs_and_record_only(store):
    members = sweep_with_runs(store, "sweep-20260101-000000")
    other = write_run(store, "done", name="other")
    deleted = sweeps.delete_sweep(store, "sweep-20260101-000000")
    assert sorted(deleted) == sorted(run.id for run in members)
    assert [run.id for run in store.list()] == [other.id]
    assert sweeps.list_sweeps(store) == []


def test_a_sweep_with_an_active_run_is_not_deleted_at_all(store):
    members = sweep_with_runs(store, "sweep-a", states=("done", "running"))
    with pytest.raises(RuntimeError, match=f"still has 1 queued or running run\\(s\\) \\({members[1].id}\\)"):
        sweeps.delete_sweep(store, "sweep-a")
    assert len(store.list()) == 2 and len(sweeps.list_sweeps(store)) == 1


def test_deleting_a_sweep_finds_runs_named_by_config_and_skips_runs_already_gone(store):
    members = sweep_with_runs(store, "sweep-b")
    store.delete(members[0].id)
    stray = write_run(store, "done", name="imported", sweep_id="sweep-b")  # not in the record
    assert sorted(sweeps.sweep_run_ids(store, "sweep-b")) == sorted([members[1].id, members[2].id, stray.id])
    assert len(sweeps.delete_sweep(store, "sweep-b")) == 3 and store.list() == []


def test_deleting_an_unknown_or_unsafe_sweep_id_is_a_clear_error(store):
    with pytest.raises(KeyError, match="no sweep 'sweep-none'"):
        sweeps.delete_sweep(store, "sweep-none")
    with pytest.raises(KeyError, match="invalid sweep id '../runs'"):
        sweeps.delete_sweep(store, "../runs")


# ----------------------------------------------------------------------------- TensorBoard

def test_the_tensorboard_command_uses_the_script_beside_python(tmp_path):
    bin_dir = tmp_path / "env with space" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    store_root = tmp_path / "my runs"
    assert runs_view.tensorboard_command(store_root, python) == (
        f"{shlex.quote(str(python))} -m tensorboard.main --logdir {shlex.quote(str(store_root))} --port 6006")
    (bin_dir / "tensorboard").write_text("#!/bin/sh\n")
    command = shlex.split(runs_view.tensorboard_command(store_root, python))
    assert command == [str(bin_dir / "tensorboard"), "--logdir", str(store_root), "--port", "6006"]


def test_the_tensorboard_command_of_this_environment_names_a_real_program(store):
    program, *args = shlex.split(runs_view.tensorboard_command(store.root))
    assert Path(program).is_file() and Path(program).parent == Path(sys.executable).parent
    assert args == ["--logdir", str(store.root.resolve()), "--port", "6006"]


# ----------------------------------------------------------------------------- export and import

def test_annotations_batches_card_and_external_results_travel_in_an_export(store, tmp_path):
    run = write_run(store, "done", name="travels")
    run.annotate(name="shared", tags=["paper"], notes="for the paper", starred=True)
    write_json(run.batches_path, [{"batch": 1, "loss": 0.7, "learning_rate": 0.001}])
    run.model_card_path.write_text("# Model card\n\nNot for clinical use.\n")
    write_json(run.external_dir / "hospital-b.json", {"name": "hospital-b", "evaluated": 1.0, "auc": 0.9})
    archive = export_runs(store, [run.id], tmp_path / "out.zip")
    with zipfile.ZipFile(archive) as opened:
        assert {f"{run.id}/annotations.json", f"{run.id}/batches.json", f"{run.id}/model_card.md",
                f"{run.id}/external/hospital-b.json"} <= set(opened.namelist())
    target = RunStore(tmp_path / "other")
    imported = target.get(import_archive(target, archive).imported[0])
    assert imported.annotations() == run.annotations()
    assert imported.first_epoch_batches() == run.first_epoch_batches()
    assert imported.model_card_path.read_text() == run.model_card_path.read_text()
    assert imported.external_results() == run.external_results()


def rewrite_member(archive: Path, member: str, data: bytes, destination: Path) -> Path:
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(destination, "w") as target:
        for info in source.infolist():
            target.writestr(info, data if info.filename == member else source.read(info))
        if member not in source.namelist():
            target.writestr(member, data)
    return destination


@pytest.mark.parametrize("member, data, message", [
    ("annotations.json", b'{"tags": ["two words"]}', "annotations.json: tag 'two words'"),
    ("annotations.json", b"[1, 2]", "annotations.json is not a JSON object"),
    ("batches.json", b'{"loss": 1}', "batches.json is not a JSON list of batches"),
    ("batches.json", b"[1, 2", "batches.json is not a JSON list of batches"),
    ("external/site.json", b"[]", "external/site.json is not a JSON object"),
    ("model_card.md", b"\xff\xfe\x00binary", "model_card.md is not UTF-8 text"),
    ("external/../../evil.json", b"{}", "unsafe path"),
    ("external/sub/x.json", b"{}", "not a file a CXR Lab run contains"),
    ("saved_model/saved_model.pb", b"x", "not a file a CXR Lab run contains"),
    ("model.tflite", b"x", "not a file a CXR Lab run contains"),
])
def test_bad_annotation_and_result_files_are_refused_on_import(store, tmp_path, member, data, message):
    run = write_run(store, "done", name="source")
    archive = export_runs(store, [run.id], tmp_path / "good.zip")
    bad = rewrite_member(archive, f"{run.id}/{member}", data, tmp_path / "bad.zip")
    target = RunStore(tmp_path / "other")
    with pytest.raises(ImportRefused, match=None) as refused:
        import_archive(target, bad)
    assert message in str(refused.value)
    assert target.list() == []


# ----------------------------------------------------------------------------- the Runs page

FILTERS = {"runs_filter_query": "test_auc >= 0", "runs_filter_tags": ["baseline"], "runs_filter_starred": True,
           "runs_filter_states": ["done"], "runs_filter_archs": ["seed_cnn"], "runs_filter_text": "fa"}


def shown_names(at) -> list[str]:
    return sorted(at.dataframe(key="runs_table").value["name"])


def select(at, run_ids):
    """Select rows of the runs table as a click would report them (AppTest cannot click rows)."""
    table = at.dataframe(key="runs_table").value
    rows = [i for i, run_id in enumerate(table["run_id"]) if run_id in run_ids]
    at.session_state["runs_table"] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def test_the_page_filters_and_keeps_its_filters_for_a_new_session(app_env, store, browsed):
    at = open_page("pages/runs.py")
    assert_clean(at)
    assert shown_names(at) == ["broken", "fast", "mlp-run", "zoomed"]
    for key, value in FILTERS.items():
        (at.text_input if isinstance(value, str) else at.checkbox if isinstance(value, bool)
         else at.multiselect)(key=key).set_value(value)
    at.run()
    assert_clean(at)
    assert shown_names(at) == ["fast"]
    # app.py saves them after every page run; AppTest runs a switched-to page without app.py, so let
    # a run of app.py (on Home) save this session's filters, as every run does in a browser.
    open_page("pages/home.py", session={key: at.session_state[key] for key in FILTERS})
    saved = json.loads((app_env / ui_state.FILE_NAME).read_text())
    assert {key: saved[key] for key in FILTERS} == FILTERS
    again = open_page("pages/runs.py")  # a new browser session (reload); the file outlives a server restart
    assert_clean(again)
    assert {key: again.session_state[key] for key in FILTERS} == FILTERS
    assert shown_names(again) == ["fast"]


def test_a_bad_query_says_why_and_leaves_the_table_unfiltered(app_env, browsed):
    at = open_page("pages/runs.py")
    at.text_input(key="runs_filter_query").set_value("test_aux >= 0.9").run()
    assert_no_exception(at)
    assert [e.value for e in at.error] == [
        "Filter not applied: unknown column 'test_aux' (did you mean test_auc, test_accuracy?)"]
    assert shown_names(at) == ["broken", "fast", "mlp-run", "zoomed"]


def selection_names(at) -> list[str]:
    """The runs the table's selection points at, by name (its rows are positions in the rows shown)."""
    table = at.dataframe(key="runs_table").value
    rows = at.session_state["runs_table"]["selection"]["rows"]
    return sorted(table.iloc[i]["name"] if i < len(table) else f"row {i} not shown" for i in rows)


def test_a_filter_keeps_the_selection_on_the_same_runs_and_the_compare_box_agrees(app_env, store, browsed):
    fast, mlp = browsed["fast"], browsed["mlp"]
    at = select(open_page("pages/runs.py"), [fast.id, mlp.id])
    assert selection_names(at) == ["fast", "mlp-run"]
    assert sorted(at.multiselect(key="runs_compare_ids").value) == sorted([fast.id, mlp.id])
    # Hiding the mlp run moves the other rows up: the selection must not slide onto other runs.
    at.multiselect(key="runs_filter_archs").set_value(["seed_cnn"]).run()
    assert_no_exception(at)
    assert selection_names(at) == ["fast"]
    assert at.multiselect(key="runs_compare_ids").value == [fast.id]
    assert [e.label for e in at.expander][:1] == ["Name, tags and notes of fast"]
    at.multiselect(key="runs_filter_archs").set_value([]).run()  # shown again: the same run still selected
    assert selection_names(at) == ["fast"] and at.multiselect(key="runs_compare_ids").value == [fast.id]


def test_empty_cells_of_the_runs_table_read_a_dash_as_on_home(app_env, browsed):
    at = open_page("pages/runs.py")
    table = at.dataframe(key="runs_table")
    assert table.value.set_index("name").loc["broken", ["test_auc", "duration_s"]].isna().any()
    assert table.proto.placeholder == compare.MISSING == "—"


def test_a_remembered_tag_that_no_run_has_any_more_is_dropped(app_env, store, browsed):
    at = open_page("pages/runs.py")
    at.multiselect(key="runs_filter_tags").set_value(["augmented"]).run()
    assert shown_names(at) == ["zoomed"]
    browsed["zoomed"].annotate(tags=[])
    again = open_page("pages/runs.py")
    assert_clean(again)
    assert again.session_state["runs_filter_tags"] == [] and len(shown_names(again)) == 4


def test_one_selected_run_is_renamed_and_tagged_from_its_form(app_env, store, browsed):
    run = browsed["mlp"]
    at = select(open_page("pages/runs.py"), [run.id])
    at.text_input(key=f"annotate_name_{run.id}").set_value("final model")
    at.text_input(key=f"annotate_tags_{run.id}").set_value("Paper, best")
    at.text_area(key=f"annotate_notes_{run.id}").set_value("chosen for the paper")
    next(b for b in at.button if b.label == "Save").click().run()
    assert_clean(at)
    assert Run(run.path).annotations() == {"name": "final model", "tags": ["paper", "best"],
                                           "notes": "chosen for the paper"}
    row = at.dataframe(key="runs_table").value.set_index("run_id").loc[run.id]
    assert (row["name"], row["tags"]) == ("final model", "paper, best")


def test_the_star_of_the_selected_run_toggles_with_one_click(app_env, store, browsed):
    run = browsed["mlp"]
    at = select(open_page("pages/runs.py"), [run.id])
    star = at.button(key="runs_star_button")
    assert star.label == "Star"
    star.click().run()
    assert_clean(at)
    assert Run(run.path).annotations() == {"starred": True}
    assert bool(at.dataframe(key="runs_table").value.set_index("run_id").loc[run.id, "starred"])
    assert at.button(key="runs_star_button").label == "Unstar"  # still selected: the same button undoes it
    at.button(key="runs_star_button").click().run()
    assert Run(run.path).annotations() == {"starred": False}
    assert not at.dataframe(key="runs_table").value.set_index("run_id").loc[run.id, "starred"]


def test_a_bad_tag_in_the_form_is_refused_and_nothing_is_saved(app_env, store, browsed):
    run = browsed["mlp"]
    at = select(open_page("pages/runs.py"), [run.id])
    at.text_input(key=f"annotate_tags_{run.id}").set_value("two words")
    next(b for b in at.button if b.label == "Save").click().run()
    assert_no_exception(at)
    assert any("Not saved: tag 'two words'" in e.value for e in at.error)
    assert Run(run.path).annotations() == {}


def test_several_selected_runs_are_tagged_and_starred_together(app_env, store, browsed):
    chosen = [browsed["mlp"].id, browsed["broken"].id]
    at = select(open_page("pages/runs.py"), chosen)
    at.text_input(key="annotate_bulk_tag").set_value("review").run()
    at.button(key="annotate_add_button").click().run()
    assert at.button(key="runs_star_button").label == "Star 2 selected"
    at.button(key="runs_star_button").click().run()
    assert_no_exception(at)
    assert {e.value for e in at.error} == {"**broken** failed: out of memory"}  # why it failed, nothing else
    assert [Run(store.get(r).path).annotations() for r in chosen] == [{"tags": ["review"], "starred": True}] * 2
    at.multiselect(key="runs_filter_tags").set_value(["review"]).run()
    assert shown_names(at) == ["broken", "mlp-run"]


@pytest.mark.slow
def test_a_selected_run_opens_in_evaluate(app_env, store, browsed):
    run = browsed["zoomed"]
    at = select(open_page("pages/runs.py"), [run.id])
    at.button(key="runs_evaluate_button").click().run()
    assert_no_exception(at)
    assert at.selectbox(key="eval_run").value == run.id


def test_the_tensorboard_command_is_shown(app_env, browsed):
    at = open_page("pages/runs.py")
    assert runs_view.tensorboard_command(app_env) in [c.value for c in at.code]


def test_a_sweep_is_chosen_and_all_its_runs_deleted(app_env, store, browsed):
    members = sweep_with_runs(store, "sweep-20260101-000000")
    at = open_page("pages/runs.py")
    at.selectbox(key="runs_filter_sweep").set_value("sweep-20260101-000000").run()
    assert shown_names(at) == sorted(run.config()["name"] for run in members)
    at.button(key="runs_delete_sweep_button").click().run()
    assert any("Delete all 3 runs of sweep lr study" in w.value for w in at.warning)
    at.button(key="runs_confirm_sweep_button").click().run()
    assert_clean(at)
    assert any("Deleted sweep sweep-20260101-000000 and its 3 runs." in s.value for s in at.success)
    assert shown_names(at) == ["broken", "fast", "mlp-run", "zoomed"]
    assert sweeps.list_sweeps(store) == []


def test_a_sweep_with_a_running_run_is_kept_with_a_message(app_env, store, browsed):
    sweep_with_runs(store, "sweep-live", states=("done", "running"))
    at = open_page("pages/runs.py")
    at.selectbox(key="runs_filter_sweep").set_value("sweep-live").run()
    at.button(key="runs_delete_sweep_button").click().run()
    at.button(key="runs_confirm_sweep_button").click().run()
    assert_no_exception(at)
    assert any("still has 1 queued or running run(s)" in e.value for e in at.error)
    assert len(sweeps.sweep_run_ids(store, "sweep-live")) == 2


@pytest.fixture
def two_models(tiny_run, runs_dir):
    """Two copies of the trained tiny run (models Diagnose can load) under different ids and names."""
    first = copy_run(tiny_run, runs_dir)
    shutil.copytree(first.path, runs_dir / "second-model")
    second = RunStore(runs_dir).get("second-model")
    first.annotate(name="first model")
    second.annotate(name="second model")
    return first, second


@pytest.mark.slow
def test_a_selected_run_opens_in_diagnose_and_the_box_is_the_users_again(app_env, two_models):
    at = open_page("pages/runs.py")
    for run in two_models:
        at = select(at, [run.id])
        at.button(key="runs_diagnose_button").click().run()
        assert_no_exception(at)
        assert at.selectbox(key="diag_run").value == run.id
        assert at.selectbox(key="diag_task").value == run.config()["task"]
        at.switch_page("pages/runs.py").run()
    at.switch_page("pages/diagnose.py").run()
    first, second = two_models
    at.selectbox(key="diag_run").set_value(first.id).run()  # the user's choice now wins over the link
    assert at.selectbox(key="diag_run").value == first.id and at.query_params["run"] == first.id
