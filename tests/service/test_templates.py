"""Fleets: a tenant's template creates the streams its sensors report to, and many streams are created in
one request, through the real server."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tbptt.service.settings import Settings
from tests.service.factories import app_client, wait_ready
from tests.service.server import Server

TEMPLATE = {"model": {"input_size": 1}, "target": "next", "labels": {"fleet": "boilers"}}


def ids(client, prefix: str = "") -> list[str]:
    return [s["id"] for s in client.get("/v1/streams", params={"prefix": prefix}).json()["streams"]]


def test_with_a_template_an_observation_creates_its_stream(client):
    observations_create_streams_from_the_template(client)


def observations_create_streams_from_the_template(client) -> None:
    """(tests/service/test_sharded.py runs this against a sharded server: ``client`` is an httpx.Client there)"""
    assert client.post("/v1/streams/boiler-1/observations", json={"x": 20.5}).status_code == 404  # none yet
    assert client.get("/v1/template").status_code == 404
    too_big = client.put("/v1/template", json={"model": {"input_size": 1, "output_size": 1025}})
    assert too_big.status_code == 422 and client.get("/v1/template").status_code == 404  # the service's limits
    put = client.put("/v1/template", json=TEMPLATE)
    assert put.status_code == 200 and put.json()["target"] == "next" and put.json()["horizon"] == 1  # complete
    assert client.get("/v1/template").content == put.content  # the same bytes: compact, as every answer is
    response = client.post("/v1/streams/boiler-1/observations", json={"x": 20.5, "seq": 1})
    assert response.status_code == 200 and response.json()["results"][0]["step"] == 1
    info = client.get("/v1/streams/boiler-1").json()
    assert info["config"]["target"] == "next" and info["labels"] == {"fleet": "boilers"}
    cross = {"observations": [{"stream": "boiler-2", "x": 1.0}, {"stream": "boiler-3", "x": 2.0}]}
    assert client.post("/v1/observations", json=cross).status_code == 200
    assert ids(client, "boiler-") == ["boiler-1", "boiler-2", "boiler-3"]
    misfit = client.post("/v1/streams/boiler-4/observations", json={"x": [1.0, 2.0]})  # the template's size: 1
    assert misfit.status_code == 422 and misfit.json()["detail"][0]["loc"] == ["body", "x"]
    assert "boiler-4" not in ids(client, "boiler-")  # refused: nothing created
    mixed = {"observations": [{"stream": "boiler-5", "x": 1.0}, {"stream": "boiler-1", "x": [1.0, 2.0]}]}
    assert client.post("/v1/observations", json=mixed).status_code == 422  # another part is refused ...
    assert "boiler-5" not in ids(client, "boiler-")  # ... so the request creates nothing
    backwards = {"observations": [{"x": 1.0, "ts": 10}, {"x": 2.0, "ts": 5}]}  # refused when planned: 409s
    assert client.post("/v1/streams/boiler-6/observations", json=backwards).status_code == 409
    reused = {"observations": [{"stream": "boiler-7", "x": 1.0, "seq": 5}, {"stream": "boiler-7", "x": 2.0, "seq": 3}]}
    assert client.post("/v1/observations", json=reused).status_code == 409
    assert ids(client, "boiler-") == ["boiler-1", "boiler-2", "boiler-3"]  # created nothing (they did, once)
    assert client.delete("/v1/template").status_code == 204
    assert client.post("/v1/streams/boiler-5/observations", json={"x": 1.0}).status_code == 404
    assert client.post("/v1/streams/boiler-1/observations", json={"x": 1.0}).status_code == 200  # it stays


def test_a_websocket_to_an_unknown_stream_creates_it_from_the_template(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/v1/streams/ws-0/ws") as ws:
        ws.receive_json()  # no template: closed, saying the stream is unknown
    assert closed.value.code == 1008
    assert client.put("/v1/template", json=TEMPLATE).status_code == 200
    with client.websocket_connect("/v1/streams/ws-1/ws") as ws:
        ws.send_json({"x": 4.0})
        assert ws.receive_json()["results"][0]["step"] == 1
    assert client.get("/v1/streams/ws-1").json()["labels"] == {"fleet": "boilers"}
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/v1/streams/ws-2/watch") as ws:
        ws.receive_json()  # watching does not create: nothing would ever be sent to it
    assert "ws-2" not in ids(client)


def test_many_streams_are_created_in_one_request_over_the_template(client):
    assert client.put("/v1/template", json=TEMPLATE).status_code == 200
    body = {"streams": [{"id": "a"}, {"id": "b", "labels": {"fleet": "spare"}}, {"id": "c", "horizon": 4}]}
    response = client.post("/v1/streams", json=body)
    assert response.status_code == 200, response.text
    made = response.json()["streams"]
    assert [(s["id"], s["created"]) for s in made] == [("a", True), ("b", True), ("c", True)]
    assert made[1]["labels"] == {"fleet": "spare"} and made[2]["config"]["horizon"] == 4
    again = client.post("/v1/streams", json=body).json()["streams"]
    assert [s["created"] for s in again] == [False, False, False]  # the same: confirmed, as PUT does
    conflict = client.post("/v1/streams", json={"streams": [{"id": "d"}, {"id": "a", "horizon": 2}]})
    assert conflict.status_code == 409 and "d" not in ids(client)  # checked whole first
    twice = client.post("/v1/streams", json={"streams": [{"id": "e"}, {"id": "e"}]})
    assert twice.status_code == 422 and twice.json()["detail"][0]["loc"] == ["body", "streams", 1, "id"]
    bad = client.post("/v1/streams", json={"streams": [{"id": "f"}, {"id": "g", "horizon": 0}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "streams", 1, "horizon"]
    assert ids(client) == ["a", "b", "c"]


def test_without_a_template_each_item_is_a_whole_body(client):
    response = client.post("/v1/streams", json={"streams": [{"id": "x", "model": {"input_size": 2}}, {"id": "y"}]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "streams", 1, "model"]
    assert ids(client) == []
    # a rule across fields, and a service limit: named where they are, in the item that breaks them
    crossed = {
        "streams": [
            {"id": "a", "model": {"input_size": 1}},
            {"id": "b", "model": {"input_size": 1}, "elapsed_input": True, "timestamps": "any"},
        ]
    }
    response = client.post("/v1/streams", json=crossed)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "streams", 1, "timestamps"]
    big = {"streams": [{"id": "a", "model": {"input_size": 1, "hidden_size": 1024, "num_layers": 4}}]}
    response = client.post("/v1/streams", json=big)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][:3] == ["body", "streams", 0]
    assert ids(client) == []


def test_a_bulk_create_over_the_quota_creates_nothing(tmp_path):
    with app_client(Settings(data_dir=tmp_path / "data", max_streams_per_tenant=3)) as c:
        wait_ready(c)
        c.put("/v1/template", json=TEMPLATE)
        refused = c.post("/v1/streams", json={"streams": [{"id": f"s{k}"} for k in range(4)]})
        assert refused.status_code == 403 and ids(c) == []
        assert c.post("/v1/streams", json={"streams": [{"id": f"s{k}"} for k in range(3)]}).status_code == 200
        assert c.post("/v1/streams/s9/observations", json={"x": 1.0}).status_code == 403  # no room to create it
        again = c.post("/v1/streams", json={"streams": [{"id": f"s{k}"} for k in range(3)]})  # at the quota: ...
        assert again.status_code == 200 and [s["created"] for s in again.json()["streams"]] == [False] * 3
        assert c.put("/v1/streams/s0", json={**TEMPLATE}).status_code == 200  # ... confirming takes no room
    with app_client(Settings(data_dir=tmp_path / "data", max_streams_per_tenant=2)) as c:  # the limit lowered
        wait_ready(c)
        assert c.put("/v1/streams/s0", json={**TEMPLATE}).status_code == 200  # over it: still confirmed ...
        assert c.put("/v1/streams/s5", json={**TEMPLATE}).status_code == 403  # ... and nothing created


def test_observations_for_more_new_streams_than_the_quota_leaves_create_none(tmp_path):
    """The template's streams of one request are created together, within the quotas together: a refused
    request creates nothing (it created the streams that fitted, one by one, before the one that did not)."""
    with app_client(Settings(data_dir=tmp_path / "data", max_streams_per_tenant=3)) as c:
        wait_ready(c)
        c.put("/v1/template", json=TEMPLATE)
        four = {"observations": [{"stream": f"s{k}", "x": 1.0} for k in range(4)]}
        refused = c.post("/v1/observations", json=four)
        assert refused.status_code == 403 and "TBPTT_MAX_STREAMS_PER_TENANT" in refused.text and ids(c) == []
        three = {"observations": [{"stream": f"s{k % 3}", "x": float(k)} for k in range(6)]}  # each twice
        applied = c.post("/v1/observations", json=three)
        assert applied.status_code == 200 and [r["step"] for r in applied.json()["results"]] == [1, 1, 1, 2, 2, 2]
        assert ids(c) == ["s0", "s1", "s2"]
        assert c.post("/v1/observations", json=three).status_code == 200  # at the quota, its streams still served


def test_a_bulk_create_the_store_refuses_halfway_creates_nothing(tmp_path):
    """The store refuses the third stream's row (a trigger, as a full disk refuses a write): none of the four is
    created, in memory or on disk, and the same request later creates them all (it was a commit per stream,
    which left the first two behind)."""
    with app_client(Settings(data_dir=tmp_path / "data")) as c:
        wait_ready(c)
        c.put("/v1/template", json=TEMPLATE)
        with sqlite3.connect(tmp_path / "data" / "tbptt.sqlite3") as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON streams WHEN NEW.id = 'c' "
                "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
            )
        body = {"streams": [{"id": name} for name in "abcd"]}
        refused = c.post("/v1/streams", json=body)
        assert refused.status_code == 507 and "full" in refused.json()["detail"] and ids(c) == []
        with sqlite3.connect(tmp_path / "data" / "tbptt.sqlite3") as db:
            db.execute("DROP TRIGGER refuse")
        made = c.post("/v1/streams", json=body).json()["streams"]
        assert [(s["id"], s["created"]) for s in made] == [(name, True) for name in "abcd"]
    with app_client(Settings(data_dir=tmp_path / "data")) as c:  # restarted: each once
        wait_ready(c)
        assert ids(c) == list("abcd")


def test_the_template_and_the_streams_it_created_survive_kill_9(tmp_path):
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.put("/v1/template", json=TEMPLATE).status_code == 200
            assert c.post("/v1/streams/auto/observations", json={"x": 3.0, "seq": 1}).status_code == 200
        server.kill()
        server = Server(tmp_path / "data").start()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/v1/template").json()["labels"] == {"fleet": "boilers"}
            assert c.get("/v1/streams/auto").json()["steps"] == 1
            assert c.post("/v1/streams/auto-2/observations", json={"x": 3.0}).status_code == 200
    finally:
        server.stop()
