"""core/workers/ray_auth.py: token authentication through Ray's documented environment variables
(checked against ray 2.60.0). The real cluster, started with a token, is in tests/test_ray.py (slow)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.workers import ray_auth

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def with_token_file(home: Path) -> Path:
    token = home / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a-token")
    return token


def test_a_token_file_turns_token_authentication_on(home):
    with_token_file(home)
    environ = {}
    assert ray_auth.use_token_when_available(environ) is True
    assert environ == {"RAY_AUTH_MODE": "token"}


@pytest.mark.parametrize("variable", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"])
def test_a_token_named_by_the_environment_turns_it_on(home, variable):
    environ = {variable: "a-token"}
    assert ray_auth.use_token_when_available(environ) is True
    assert environ["RAY_AUTH_MODE"] == "token"


def test_without_a_token_nothing_changes(home):
    environ = {"RAY_AUTH_TOKEN": "  "}
    assert ray_auth.use_token_when_available(environ) is False
    assert "RAY_AUTH_MODE" not in environ


def test_an_explicit_mode_wins(home):
    with_token_file(home)
    environ = {"RAY_AUTH_MODE": "disabled"}
    assert ray_auth.use_token_when_available(environ) is False
    assert environ == {"RAY_AUTH_MODE": "disabled"}


def test_ray_imported_by_the_backend_uses_the_token(home):
    """Ray reads the mode when imported: the backend sets it first, and Ray's own configuration agrees."""
    with_token_file(home)
    code = ("import core.workers.ray_backend; from ray._raylet import AuthenticationMode, get_authentication_mode; "
            "print(get_authentication_mode() == AuthenticationMode.TOKEN)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"
