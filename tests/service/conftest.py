"""Fixtures for the service: the real app on a temporary data directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tbptt.service.app import create_app
from tbptt.service.settings import Settings


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "service not ready"
        time.sleep(0.02)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def make_stream(client: TestClient, stream: str = "s", **config) -> dict:
    model = config.pop("model", {"input_size": 2})
    r = client.put(f"/v1/streams/{stream}", json={"model": model, **config})
    assert r.status_code == 201, r.text
    return r.json()
