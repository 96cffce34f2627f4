"""Pages compiled while other threads parse Python: the race of CPython 3.11 before 3.11.8 (gh-106905).

    python -m tests.parse_race --seconds 8 [--magic]

Compiles every page script of the dashboard again and again through Streamlit's own ScriptCache (as a
server compiles a page on its first view), with the options the served app reads from
.streamlit/config.toml, while background threads do what Keras imports and AutoGraph do: `ast.parse`
Python source. A third thread frees cycles of objects with finalizers, so the garbage collector runs
Python code in the middle of building an AST, where the interpreter may switch threads (in the
dashboard, TensorFlow's and Streamlit's objects play that part). Prints one JSON line:
{"compiles": N, "errors": K, "first_error": "...", "parse_errors": P, "first_parse_error": "..."};
stops at the first failure on either side: a page that fails to compile (K), or a background parse
that fails (P: the race hits whichever thread's AST is being built).
`--magic` forces Streamlit's magic on, the compile path that goes through a Python AST;
`--main-parses` parses the pages with `ast.parse` instead (two threads parsing, as numpy's header
reader and AutoGraph do); `--guard` first installs the dashboard's lock (core/ast_guard.py).
"""
from __future__ import annotations

import argparse
import ast
import gc
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(str(path) for path in [ROOT / "app.py", *(ROOT / "ui").rglob("*.py")])
PARSED_SOURCES = [path.read_text() for path in sorted((ROOT / "core" / "ml").glob("*.py"))]


class Finalized:
    def __del__(self):
        sum(range(50))  # Python code run by the garbage collector: a point where threads may switch


def keep_parsing(done: threading.Event, failures: list) -> None:
    while not done.is_set():
        for source in PARSED_SOURCES:
            try:
                ast.parse(source)
            except SystemError as error:  # the race can hit either side
                failures.append(str(error))


def keep_making_garbage(done: threading.Event) -> None:
    """Cycles with finalizers at a bounded rate (about 50,000 a second). Unbounded, this thread made them
    faster than the collector, run by whichever thread allocates next (here the one building an AST),
    could finalize them: that thread then did nothing but collect, and the run never ended."""
    while not done.is_set():
        for _ in range(50):
            cycle = Finalized()
            cycle.me = cycle
        time.sleep(0.001)


def compile_pages(seconds: float, main_parses: bool = False) -> dict:
    """Compile the pages for up to `seconds` with the background threads running (or, with
    `main_parses`, parse them with `ast.parse` as numpy's header reader does in page threads)."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    done = threading.Event()
    parse_failures: list[str] = []
    threads = [threading.Thread(target=keep_parsing, args=(done, parse_failures), daemon=True),
               threading.Thread(target=keep_making_garbage, args=(done,), daemon=True)]
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50, 5, 5)
    for thread in threads:
        thread.start()
    compiles, first_error = 0, None
    deadline = time.monotonic() + seconds
    try:
        while first_error is None and not parse_failures and time.monotonic() < deadline:
            cache = ScriptCache()  # a new server: nothing compiled yet
            for page in PAGES:
                try:
                    if main_parses:
                        ast.parse(Path(page).read_text())
                    else:
                        cache.get_bytecode(page)
                    compiles += 1
                except SystemError as error:
                    first_error = f"{Path(page).name}: {error}"
                    break
    finally:
        done.set()
        for thread in threads:
            thread.join()
    return {"compiles": compiles, "errors": int(first_error is not None), "first_error": first_error,
            "parse_errors": len(parse_failures), "first_parse_error": parse_failures[0] if parse_failures else None}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--magic", action="store_true", help="force runner.magicEnabled on")
    parser.add_argument("--main-parses", action="store_true", help="ast.parse the pages instead of compiling them")
    parser.add_argument("--guard", action="store_true", help="as the dashboard does: core.ast_guard")
    args = parser.parse_args(argv)
    if args.guard:
        from core.ast_guard import guard_ast_parsing
        guard_ast_parsing()
    from streamlit import config
    if args.magic:
        config.set_option("runner.magicEnabled", True)
    result = compile_pages(args.seconds, args.main_parses)
    result["magic"] = config.get_option("runner.magicEnabled")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
