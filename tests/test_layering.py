"""The layering of ARCHITECTURE.md, read from the source with `ast`: every import in core/, at module
level or inside a function (a lazy import is still a dependency, only a later one), goes to an area
listed before the importer's own in LAYERS, or within its own area; and no module imports itself
back through others. No exceptions are allowed: where a lower area needs something of a higher one,
the higher one passes it in (the job manager hands the Ray backend its way of training a run)."""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core"
# Each area may import the ones before it. "base" is the modules directly in core/, which import nothing
# of ours (files: atomic writes and locks; ast_guard; document: the Markdown/HTML renderer; progress: the
# progress callback's type); "entry" the commands core/__main__ and core/evaluate.
LAYERS = ("base", "settings", "data", "store", "ml", "workers", "present", "cli", "entry")
ENTRY_MODULES = {"core.__main__", "core.evaluate"}


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in CORE.rglob("*.py")}


def area(module: str) -> str:
    if module in ENTRY_MODULES:
        return "entry"
    name = module.split(".")[1] if "." in module else "base"
    return name if name in LAYERS else "base"


def imported_modules(module: str) -> set[str]:
    """The modules of ours that `module` imports anywhere in its file (resolved to the module, not the name)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {our for name in names if (our := ours(name)) not in (None, module, "core")}
    return found


def ours(name: str) -> str | None:
    """The module of core/ that `name` (a module or a name in one) is, or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_the_layers_cover_every_module_of_core():
    assert {module for module in MODULES if area(module) == "base"} == {
        "core", "core.files", "core.ast_guard", "core.document", "core.progress"}
    assert {area(module) for module in MODULES} == set(LAYERS)


def test_every_import_goes_to_an_earlier_layer_or_within_its_own():
    upward = sorted(f"{module} imports {target} ({area(module)} -> {area(target)})"
                    for module, targets in GRAPH.items() for target in targets
                    if LAYERS.index(area(target)) > LAYERS.index(area(module)))
    assert upward == []


def test_no_import_cycles():
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(GRAPH[module]):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [module])
    assert cycles == []


def test_the_checks_see_lazy_imports_and_would_catch_an_upward_one():
    """The ray backend imports Ray's modules only; the manager imports the backend inside functions."""
    assert "core.workers.ray_backend" in GRAPH["core.workers.manager"]  # a function-level import
    assert "core.workers.manager" not in GRAPH["core.workers.ray_backend"]
    assert LAYERS.index(area("core.store.runs")) < LAYERS.index(area("core.workers.manager"))


# TensorFlow and Keras are imported only by core/ml, and by this one module for one check: a run
# imported from a zip must have a model.keras that loads in Keras' safe mode before the store takes it.
DEEP_LEARNING = ("tensorflow", "keras", "tf_keras_vis")
ALSO_IMPORTING_KERAS = {"core.store.portable"}


def imports_deep_learning(module: str) -> bool:
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(name.split(".")[0] in DEEP_LEARNING for name in names):
            return True
    return False


def test_only_core_ml_imports_tensorflow_or_keras():
    outside = {module for module in MODULES if area(module) != "ml" and imports_deep_learning(module)}
    assert outside == ALSO_IMPORTING_KERAS
