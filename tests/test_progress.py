"""One progress convention (core/progress.py): every long operation of core/ takes
`progress(done, total, message)`, and the dataset loader's reports read as a page shows them."""
import ast
from pathlib import Path

from core.data.datasets import load_dataset
from core.progress import fraction, within
from tests.synthetic import make_chest_folder

CORE = Path(__file__).resolve().parents[1] / "core"
# Parameters named `progress` that are not the callback: training's live record (run_control.Progress),
# which load_data fills, and snapshots of it read back (annotated `dict`: a page's bars, the CLI's line).
LIVE_RECORD = {("core/ml/data_pipeline.py", "load_data")}


def progress_parameters():
    """(file, function, annotation) of every `progress` parameter of a function in core/."""
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in node.args.args + node.args.kwonlyargs:
                    if arg.arg == "progress":
                        annotation = ast.unparse(arg.annotation) if arg.annotation else None
                        yield path.relative_to(CORE.parent).as_posix(), node.name, annotation


def test_every_long_operation_takes_the_one_progress_callback():
    found = list(progress_parameters())
    assert len(found) >= 6  # load_dataset, score_runs, common_test_set, evaluate_external, export_run, ...
    other = [(f, name, a) for f, name, a in found
             if (f, name) not in LIVE_RECORD and not (a or "").startswith("dict")
             and a not in ("ProgressFn", "ProgressFn | None")]
    assert other == []
    aliases = [path for path in CORE.rglob("*.py") if "ProgressFn =" in path.read_text()]
    assert [p.relative_to(CORE).as_posix() for p in aliases] == ["progress.py"]


def test_a_part_of_an_operation_reports_its_share_of_the_whole():
    heard = []
    part = within(lambda done, total, message: heard.append((done, total, message)), 0.5, 0.9)
    part(0, 0, "listing")  # total unknown: the part's start
    part(1, 4, "a quarter")
    part(4, 4, "all")
    assert [(round(d, 6), t, m) for d, t, m in heard] == [(0.5, 1.0, "listing"), (0.6, 1.0, "a quarter"),
                                                          (0.9, 1.0, "all")]
    assert within(None, 0.0, 0.5) is None
    assert fraction(3, 0) == 0.0 and fraction(5, 4) == 1.0


def test_loading_a_dataset_says_what_it_does_in_words(tmp_path):
    root = make_chest_folder(tmp_path / "xrays", n_patients=2, images_per_patient=2)
    heard = []
    load_dataset("folder", root, image_size=32, use_cache=False,
                 progress=lambda done, total, message: heard.append((done, total, message)))
    done, total, message = heard[-1]
    assert done == total > 0 and message == f"Decoding images: {done:,} of {total:,}"
