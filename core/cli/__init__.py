"""The command line's commands (python -m core COMMAND) and what they share."""
from __future__ import annotations

import json
import sys


def print_json(compute, refused: tuple[type[Exception], ...]) -> int:
    """Print what `compute()` returns as JSON (exit 0), or an `refused` error's message (exit 2)."""
    try:
        result = compute()
    except refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
