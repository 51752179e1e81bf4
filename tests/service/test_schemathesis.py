"""schemathesis against the real server's OpenAPI document, every check on, with and without credentials.

The only configuration (schemathesis.toml) lists 422 as expected for the operations whose contract answers 422
for rules OpenAPI cannot express, and 413 as a rejection where an over-long batch is also over the body
limit. A longer run: st run URL/openapi.json --checks all --max-examples 1000.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.service.server import Server

KEY = "alpha:st-key-0123456789abcdef"
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("schemathesis") / "data", TBPTT_API_KEYS=KEY).start()
    yield s
    assert s.stop() == 0


@pytest.mark.parametrize("credentials", [True, False], ids=["with-key", "without-key"])
def test_schemathesis_finds_nothing(server, credentials):
    st = shutil.which("st")
    assert st, "schemathesis is a test dependency"
    command = [st, "--config-file", str(ROOT / "schemathesis.toml"), "run", f"{server.url}/openapi.json",
               "--checks", "all", "--max-examples", "25"]  # fmt: skip
    if credentials:
        command += ["-H", f"Authorization: Bearer {KEY.split(':', 1)[1]}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert " passed" in summary and "failures" not in summary.split("SUMMARY")[-1].lower().replace("0 failures", "")
