"""One lock around `ast.parse` on CPython 3.11.0-3.11.7, whose AST state is shared by all threads.

Those versions fail at random ("SystemError: AST constructor recursion depth mismatch", CPython
gh-106905, fixed in 3.11.8) when two threads build Python ASTs at once. In a dashboard process many
threads do that without asking: numpy reads every .npy/.npz header with `ast.literal_eval`,
`inspect.signature` parses builtins' text signatures, TensorFlow's AutoGraph parses functions.
`guard_ast_parsing()` makes `ast.parse` (which `ast.literal_eval` calls) take one process-wide lock
there; on other versions it does nothing. Checked against CPython 3.11.7.
"""
from __future__ import annotations

import ast
import functools
import sys
import threading

RACY = (3, 11) <= sys.version_info[:3] < (3, 11, 8)
_PARSE_LOCK = threading.RLock()  # re-entrant: a finalizer run during a parse may parse too


def guard_ast_parsing(racy: bool = RACY) -> bool:
    """Serialise `ast.parse` across threads where the interpreter needs it (idempotent); True if guarded."""
    if not racy:
        return False
    if getattr(ast.parse, "guarded", False):
        return True
    unguarded = ast.parse

    @functools.wraps(unguarded)
    def parse(*args, **kwargs):
        with _PARSE_LOCK:
            return unguarded(*args, **kwargs)

    parse.guarded = True
    ast.parse = parse
    return True
