"""A real server process, started the way users start it (``tbptt serve``), on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> Server:
        """Started, once /readyz answers 200; ``timeout`` bounds a start that never comes (a sharded server's
        start took 4.4 s idle and over 30 s beside four busy processes: tests/service/factories.py)."""
        env = {**os.environ, **self.env}
        command = [sys.executable, "-m", "tbptt.service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--data-dir", str(self.data_dir)]  # fmt: skip
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        # its own session: a kill -9 takes down what it started too (a sharded server's local Ray)
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited with {self.process.returncode}: {self.output()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready within {timeout} s: {self.output()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as an orchestrator sends it; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._kill_session()  # anything it left behind
        self.log.close()
        return code

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self._kill_session()
        self.log.close()

    def _kill_session(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def output(self) -> str:
        """The end of the server's log (for assertion messages)."""
        return self.output_all()[-4000:]

    def output_all(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.data_dir.parent / f"server-{self.port}.log").read_text(errors="replace")
