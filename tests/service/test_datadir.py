"""The data directory: an unusable one stops ``tbptt serve`` at start with one line and a non-zero exit, and
a second server never opens a directory another running server holds."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.service.server import Server, free_port


def serve(data_dir, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "tbptt.service.cli",
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(data_dir),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def test_a_file_where_the_data_directory_should_be_is_refused_at_start(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    for path in (tmp_path / "data", tmp_path / "data" / "below"):
        result = serve(path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("tbptt serve: "), result.stderr
        assert "TBPTT_DATA_DIR" in result.stderr


def test_a_second_server_on_the_same_data_directory_is_refused_naming_the_first(tmp_path):
    first = Server(tmp_path / "data").start()
    try:
        result = serve(tmp_path / "data")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"in use by another tbptt server (pid {first.process.pid})" in result.stderr
    finally:
        assert first.stop() == 0
    second = Server(tmp_path / "data").start()  # once the first is gone (its hold goes with it), it starts
    assert second.stop() == 0


def test_a_killed_server_leaves_no_stale_hold(tmp_path):
    first = Server(tmp_path / "data").start()
    first.kill()
    again = Server(tmp_path / "data").start()
    assert again.stop() == 0


def test_the_engine_refuses_a_held_directory_even_past_the_start_check(tmp_path):
    """Two apps in one process (as tests and embedders build them): the second's engine fails, and its
    /healthz says so, so that an orchestrator restarts it rather than trusting a server that cannot work."""

    from tbptt.service.settings import Settings
    from tests.service.factories import app_client, wait_ready

    settings = Settings(data_dir=tmp_path / "data")
    with app_client(settings) as first:
        wait_ready(first)
        with app_client(settings) as second:
            import time

            deadline = time.monotonic() + 10
            while second.get("/healthz").status_code != 503:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert second.get("/readyz").json() == {"status": "failed"}
        assert first.put("/v1/streams/s", json={"model": {"input_size": 1}}).status_code == 201
