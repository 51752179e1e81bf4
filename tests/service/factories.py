"""Factories the service's tests share: the real app in process, ready, with a stream."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tbptt.service.app import create_app
from tbptt.service.settings import Settings


def wait_ready(client: TestClient, timeout: float = 120.0) -> None:
    """Until /readyz answers 200. The bound is for a start that never comes: a sharded server (Ray, then two
    shard processes that load torch) was ready 4.4 s after its start on this 2-core machine idle, 13.1 s beside
    two busy processes, and not in 30 s beside four (a CI run beside two benchmarks: its pytest workers and
    theirs), while nothing was wrong with it."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "service not ready"
        time.sleep(0.02)


def make_stream(client: TestClient, stream: str = "s", **config) -> dict:
    model = config.pop("model", {"input_size": 2})
    r = client.put(f"/v1/streams/{stream}", json={"model": model, **config})
    assert r.status_code == 201, r.text
    return r.json()


def app_client(settings: Settings) -> TestClient:
    """The real app in process, addressed as a local client addresses it (Host: localhost): without API
    keys the service accepts only its own host names."""
    return TestClient(create_app(settings), base_url="http://localhost")
