"""The fast lane (service/lane.py): one-observation POSTs skip FastAPI's router, and nothing a client sees
changes; the same requests through the router answer the same, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from tbptt.service import lane
from tbptt.service.settings import Settings
from tests.service.factories import app_client, make_stream, wait_ready

KEY = "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}

# (method, path, body, headers): what a sensor sends, and what it gets wrong
REQUESTS = [
    ("POST", "/v1/streams/s/observations", {"x": [0.5, 1.0], "y": 2.0, "seq": 1}, AUTH),
    ("POST", "/v1/streams/s/observations", {"x": [0.1, -1.0], "y": 1.0, "seq": 2}, AUTH),
    ("POST", "/v1/streams/s/observations", {"x": [0.5, 1.0], "y": 2.0, "seq": 1}, AUTH),  # a retry: duplicate
    ("POST", "/v1/streams/s/observations", {"x": [0.9, 1.0], "y": 2.0, "seq": 1}, AUTH),  # seq reused: 409
    ("POST", "/v1/streams/s/observations", {"observations": [{"x": [1.0, 2.0], "y": 0.5}] * 9}, AUTH),
    ("POST", "/v1/streams/s/observations", {"x": [0.5], "y": 2.0}, AUTH),  # the wrong width: 422
    ("POST", "/v1/streams/s/observations", {"x": "no"}, AUTH),
    ("POST", "/v1/streams/s/observations", b"{not json", AUTH),
    ("POST", "/v1/streams/s/observations", b"\xff\xfe", AUTH),
    ("POST", "/v1/streams/s/observations", {"x": [0.5, 1.0], "y": 2.0}, {}),  # no key: 401
    ("POST", "/v1/streams/gone/observations", {"x": [0.5, 1.0], "y": 2.0}, AUTH),  # 404
    ("POST", "/v1/streams/-bad/observations", {"x": [0.5, 1.0]}, AUTH),  # an id FastAPI refuses: 422
    ("POST", "/v1/streams/s/observations/", {"x": [0.5, 1.0]}, AUTH),
    ("GET", "/v1/streams/s/observations", None, AUTH),  # 405, with Allow
    ("POST", "/v1/streams/s/observations", {"observations": [{"x": [1.0, 2.0]}] * 20_000}, AUTH),  # 413
]


def answers(data: Path) -> list[tuple[int, dict, str]]:
    settings = Settings(data_dir=data, api_keys=f"acme:{KEY}", max_body_bytes=100_000)
    with app_client(settings) as client:
        wait_ready(client)
        assert client.put("/v1/streams/s", json={"model": {"input_size": 2}}, headers=AUTH).status_code == 201
        seen = []
        for method, path, body, headers in REQUESTS:
            content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
            r = client.request(
                method,
                path,
                content=content,
                follow_redirects=False,
                headers={**headers, "content-type": "application/json"},
            )
            kept = {k: v for k, v in r.headers.items() if k in ("content-type", "allow", "retry-after", "location")}
            seen.append((r.status_code, kept, r.text))
        return seen


def test_the_lane_answers_as_the_router_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    through_lane = answers(tmp_path / "lane")
    monkeypatch.setattr(lane, "_MATCH", lambda path: None)  # every request to the router
    through_router = answers(tmp_path / "router")
    assert [status for status, _, _ in through_lane] == [
        200, 200, 200, 409, 200, 422, 422, 422, 422, 401, 404, 422, 307, 405, 413,
    ]  # fmt: skip
    for request, got, expected in zip(REQUESTS, through_lane, through_router):
        assert got == expected, request[:2]


def test_the_lanes_requests_skip_the_router(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with app_client(settings) as client:
        wait_ready(client)
        make_stream(client, model={"input_size": 1})

        def no_router(*args: object) -> None:
            raise AssertionError("through the router")

        monkeypatch.setattr(APIRoute, "handle", no_router)
        r = client.post("/v1/streams/s/observations", json={"x": 1.0, "y": 2.0})
        assert r.status_code == 200, r.text
        with pytest.raises(AssertionError, match="through the router"):
            client.get("/v1/streams/s")  # (the patch holds for the router's requests)
        monkeypatch.undo()
        metrics = client.get("/metrics")
    assert 'route="/v1/streams/{stream_id}/observations",status="200"' in metrics.text
