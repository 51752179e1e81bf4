"""WebSocket endpoints through the real app: one reply per message, in order; watchers; close codes."""

from __future__ import annotations

import json

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.service.factories import make_stream


def test_each_message_gets_one_reply_in_order(client):
    make_stream(client, "s")
    with client.websocket_connect("/v1/streams/s/ws") as ws:
        ws.send_text(json.dumps({"x": [1, 2], "y": 1}))
        ws.send_text(json.dumps({"observations": [{"x": [2, 3]}, {"x": [3, 4], "y": 0}]}))
        ws.send_text(json.dumps({"x": [1, 2], "y": 1, "seq": 1}))  # a retry of the first
        first, second, third = ws.receive_json(), ws.receive_json(), ws.receive_json()
    assert first["stream"] == "s" and [r["step"] for r in first["results"]] == [1]
    assert [r["step"] for r in second["results"]] == [2, 3]
    assert third["results"][0]["duplicate"] and third["results"][0]["step"] == 1
    http = client.post("/v1/streams/s/observations", json={"x": [5, 6]}).json()
    assert http["results"][0]["step"] == 4


@pytest.mark.parametrize(
    "message",
    ['{"x": [1, 2, 3]}', "not json", '{"x": [NaN, 1]}', '{"x": [1, 2], "y": [1, 2, 3]}', "[]", '{"observations": []}'],
)
def test_a_bad_message_gets_a_detail_and_the_socket_stays_open(client, message):
    make_stream(client, "s")
    with client.websocket_connect("/v1/streams/s/ws") as ws:
        ws.send_text(message)
        reply = ws.receive_json()
        assert "detail" in reply and isinstance(reply["detail"], list)
        ws.send_text('{"x": [1, 2]}')
        assert ws.receive_json()["results"][0]["step"] == 1


def test_binary_messages_are_refused_politely(client):
    make_stream(client, "s")
    with client.websocket_connect("/v1/streams/s/ws") as ws:
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["detail"][0]["type"] == "message_type"
        ws.send_text('{"x": [1, 2]}')
        assert ws.receive_json()["results"][0]["step"] == 1


@pytest.mark.parametrize("path", ["/v1/streams/nope/ws", "/v1/streams/nope/watch"])
def test_unknown_stream_closes_with_1008_and_a_reason(client, path):
    with client.websocket_connect(path) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    assert closed.value.code == 1008 and "not found" in closed.value.reason


def test_watchers_see_every_batch_from_any_client(client):
    make_stream(client, "s")
    with client.websocket_connect("/v1/streams/s/watch") as watch:
        client.post("/v1/streams/s/observations", json={"observations": [{"x": [1, 2]}, {"x": [2, 3]}]})
        with client.websocket_connect("/v1/streams/s/ws") as ws:
            ws.send_text('{"x": [3, 4]}')
            ws.receive_json()
        first, second = watch.receive_json(), watch.receive_json()
    assert first["stream"] == "s" and [r["step"] for r in first["results"]] == [1, 2]
    assert [r["step"] for r in second["results"]] == [3]
    assert second["observations"] == [{"seq": 3, "x": [3.0, 4.0], "y": None}]


def test_a_watcher_that_falls_behind_is_dropped_and_never_slows_the_stream(client):
    """The drop mechanism itself: a watcher queue nobody drains. (End to end, with a client that stops
    reading from a real socket: tests/service/test_end_to_end.py.)"""
    make_stream(client, "s", model={"input_size": 1})
    hub = client.app.state.hub
    behind = client.portal.call(_watch, hub)
    for i in range(100):
        assert client.post("/v1/streams/s/observations", json={"x": float(i)}).status_code == 200
    assert ("default", "s") not in hub.shard.watched  # dropped, and the engine thread no longer builds its batches
    items = [behind.get_nowait() for _ in range(behind.qsize())]
    assert items[-1] is None and len(items) == 8  # its bound, the last slot being the goodbye
    assert client.get("/v1/streams/s").json()["steps"] == 100


async def _watch(hub):
    return hub.watchers.watch(("default", "s"), size=8)


def test_sockets_of_a_deleted_stream_never_attach_to_one_created_later_with_its_id(client):
    make_stream(client, "s", model={"input_size": 1})
    with client.websocket_connect("/v1/streams/s/ws") as ws, client.websocket_connect("/v1/streams/s/watch") as watch:
        ws.send_text('{"x": 1.0}')
        assert ws.receive_json()["results"][0]["step"] == 1
        watch.receive_json()
        assert client.delete("/v1/streams/s").status_code == 204
        make_stream(client, "s", model={"input_size": 1})  # a new stream, same id
        with pytest.raises(WebSocketDisconnect) as gone:
            watch.receive_json()
        assert gone.value.code == 1008 and "deleted" in gone.value.reason
        ws.send_text('{"x": 2.0}')
        with pytest.raises(WebSocketDisconnect) as replaced:
            ws.receive_json()
        assert replaced.value.code == 1008 and "deleted" in replaced.value.reason
    assert client.get("/v1/streams/s").json()["steps"] == 0  # the new stream got nothing of theirs
