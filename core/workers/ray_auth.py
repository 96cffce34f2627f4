"""Ray token authentication for a driver that joins a cluster at an explicit address, through Ray's
documented environment variables only (https://docs.ray.io/en/latest/ray-security/token-auth.html),
checked against ray 2.60.0: a cluster started where a token exists asks every driver for it, but Ray
enables the token itself only for `auto` addresses. Ray reads RAY_AUTH_MODE once, when it is imported,
so this runs before (core/workers/ray_backend.py calls it above its `import ray`). Imports no Ray."""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

MODE = "RAY_AUTH_MODE"
TOKEN = "RAY_AUTH_TOKEN"
TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"


def default_token_file() -> Path:
    """Where `ray start` and `ray get-auth-token --generate` keep this machine's token."""
    return Path.home() / ".ray" / "auth_token"


def has_token(environ: MutableMapping[str, str]) -> bool:
    """A token in $RAY_AUTH_TOKEN, in the file $RAY_AUTH_TOKEN_PATH names, or in the default file."""
    return bool(environ.get(TOKEN, "").strip()) or bool(environ.get(TOKEN_PATH)) or default_token_file().is_file()


def use_token_when_available(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set RAY_AUTH_MODE=token where this machine has a token and the mode is unset (an explicit mode
    wins), for Ray and the processes it starts; whether token authentication is on."""
    if MODE not in environ and has_token(environ):
        environ[MODE] = "token"
    return environ.get(MODE, "").lower() == "token"
