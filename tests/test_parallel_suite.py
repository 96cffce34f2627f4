"""The suite's own scheduling on pytest-xdist workers (tests/conftest.py): a file's tests stay on one
worker, in order, and the files that start a Ray head share one worker."""
from tests import conftest


def test_a_files_tests_share_one_scope_and_the_ray_files_one_between_them():
    assert conftest.worker_scope("tests/test_journey.py::test_01_home_and_dataset") == "tests/test_journey.py"
    assert conftest.worker_scope("tests/test_metrics.py::test_argmax_metrics_match_sklearn[binary_run]") == \
        conftest.worker_scope("tests/test_metrics.py::test_no_binary_view_without_normal_class")
    assert conftest.worker_scope("tests/test_ray.py::test_a") == conftest.worker_scope("tests/test_scale_browser.py::test_b")
    assert conftest.worker_scope("tests/test_ray.py::test_a") != conftest.worker_scope("tests/test_sweep.py::test_a")


def test_loadfile_schedules_by_those_scopes(pytestconfig, monkeypatch):
    monkeypatch.setattr(pytestconfig.option, "dist", "loadfile", raising=False)
    monkeypatch.setattr(pytestconfig.option, "tx", ["popen", "popen"], raising=False)
    monkeypatch.setattr(pytestconfig.option, "maxschedchunk", None, raising=False)
    scheduler = conftest.pytest_xdist_make_scheduler(pytestconfig, log=None)
    assert scheduler._split_scope("tests/test_scale_browser.py::test_a_sweep[x]") == "ray"
    assert scheduler._split_scope("tests/test_journey.py::test_02_train") == "tests/test_journey.py"


def test_other_distributions_keep_xdists_own_scheduler(pytestconfig, monkeypatch):
    monkeypatch.setattr(pytestconfig.option, "dist", "load", raising=False)
    assert conftest.pytest_xdist_make_scheduler(pytestconfig, log=None) is None
