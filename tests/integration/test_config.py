"""Bad configuration stops start-up with one clear line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.keyfiles import MAIN_SECRET, key_entry, keys_toml


def run_gateway(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "XAI_"))}
    base.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**base, "GATEWAY_PORT": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    return str(path)


OK = {"XAI_API_KEY": "k", "GATEWAY_KEYS_FILE": "/dev/null"}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "XAI_API_KEY is required"),
        ({"XAI_API_KEY": "k"}, "GATEWAY_KEYS_FILE is required"),
        ({**OK, "GATEWAY_KEYS_FILE": "/nonexistent/keys.toml"}, "cannot read"),
        ({**OK, "GATEWAY_PORT": "http"}, "GATEWAY_PORT='http'"),
        ({**OK, "XAI_BASE_URL": "ftp://x"}, "XAI_BASE_URL"),
        ({**OK, "REDIS_URL": "mysql://db"}, "REDIS_URL"),
        ({**OK, "RATE_LIMIT_FAILURE_MODE": "open"}, "RATE_LIMIT_FAILURE_MODE"),
        ({**OK, "GATEWAY_MAX_BODY_BYTES": "-5"}, "GATEWAY_MAX_BODY_BYTES"),
        ({**OK, "VISION_STREAM_FALLBACK": "stream"}, "VISION_STREAM_FALLBACK"),
        ({**OK, "UPSTREAM_IDLE_TIMEOUT": "0"}, "UPSTREAM_IDLE_TIMEOUT"),
    ],
)
def test_bad_setting_exits_2_with_one_line_naming_it(env, fragment):
    done = run_gateway(env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert fragment in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[[keys]\n", "not valid TOML"),
        ('[defaults]\nrequests = "ten/minute"\n', "requests"),
    ],
)
def test_bad_key_file_exits_2_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "keys.toml"
    path.write_text(content)
    done = run_gateway({"XAI_API_KEY": "k", "GATEWAY_KEYS_FILE": str(path)})
    assert done.returncode == 2
    assert str(path) in done.stderr and fragment in done.stderr
    assert "Traceback" not in done.stderr
