"""Factories and assertions the tests share (fixtures stay in the conftest files)."""

from __future__ import annotations

import time

import torch
from fastapi.testclient import TestClient

from tbptt.service.app import create_app
from tbptt.service.settings import Settings


def sequence(input_size: int, output_size: int, steps: int, seed: int = 0, missing_every: int = 0):
    """Random inputs and targets as lists (float64 values); every ``missing_every``-th target is None."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, input_size, generator=gen, dtype=torch.float64).tolist()
    ys = torch.randn(steps, output_size, generator=gen, dtype=torch.float64).tolist()
    if missing_every:
        ys = [None if i % missing_every == missing_every - 1 else y for i, y in enumerate(ys)]
    return xs, ys


def assert_identical(a: dict, b: dict) -> None:
    """Two dicts of tensors hold the same names and the same values exactly (NaN equal to NaN)."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}")


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
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
