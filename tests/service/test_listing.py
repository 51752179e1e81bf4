"""Fleets of streams: labels, and listing them a page at a time with filters, through the real server."""

from __future__ import annotations

import httpx
import pytest

from tbptt.service.client import Client
from tests.service.server import Server

ONE = {"model": {"input_size": 1}}


def page(client, **params) -> dict:
    response = client.get("/v1/streams", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_streams_come_a_page_at_a_time_by_id_with_a_total(client):
    for k in range(25):
        assert client.put(f"/v1/streams/s{k:02d}", json=ONE).status_code == 201
    first = page(client, limit=10)
    assert [s["id"] for s in first["streams"]] == [f"s{k:02d}" for k in range(10)] and first["total"] == 25
    assert client.put("/v1/streams/a-first", json=ONE).status_code == 201  # created meanwhile, before the cursor
    assert client.delete("/v1/streams/s12").status_code == 204  # deleted meanwhile, after it
    second = page(client, limit=10, cursor=first["next"])
    assert [s["id"] for s in second["streams"]] == [f"s{k:02d}" for k in (10, 11, *range(13, 21))]
    third = page(client, limit=10, cursor=second["next"])
    assert [s["id"] for s in third["streams"]] == [f"s{k:02d}" for k in range(21, 25)] and third["next"] is None
    assert third["total"] == 25  # 25 + 1 - 1
    assert len(page(client)["streams"]) == 25  # the default page holds 100
    for bad in ("not-a-cursor!", "a/b"):
        response = client.get("/v1/streams", params={"cursor": bad})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert client.get("/v1/streams", params={"limit": 1001}).status_code == 422


def test_labels_are_set_at_creation_shown_and_filtered_by(client):
    fleet = {"pump-1": {"site": "north", "kind": "pump"}, "pump-2": {"site": "south", "kind": "pump"},
             "fan-1": {"site": "north", "kind": "fan"}, "bare": {}}  # fmt: skip
    for stream, labels in fleet.items():
        response = client.put(f"/v1/streams/{stream}", json={**ONE, "labels": labels})
        assert response.status_code == 201 and response.json()["labels"] == labels
    assert client.get("/v1/streams/pump-1").json()["labels"] == fleet["pump-1"]

    def ids(**params) -> list[str]:
        return [s["id"] for s in page(client, **params)["streams"]]

    assert ids(label="site:north") == ["fan-1", "pump-1"]
    assert ids(label=["site:north", "kind:pump"]) == ["pump-1"]
    assert ids(label="kind") == ["fan-1", "pump-1", "pump-2"]  # a key alone: any value
    assert ids(prefix="pump-") == ["pump-1", "pump-2"] and ids(prefix="pump-", label="site:south") == ["pump-2"]
    assert page(client, label="site:north", limit=1)["total"] == 2
    assert client.put("/v1/streams/pump-1", json={**ONE, "labels": fleet["pump-1"]}).status_code == 200  # the same
    other = client.put("/v1/streams/pump-1", json={**ONE, "labels": {"site": "east"}})
    assert other.status_code == 409 and "PATCH" in other.json()["detail"]
    for bad in ({"no:colons": "x"}, {"k": "v" * 257}, {f"k{i}": "v" for i in range(33)}, {"k": 1}):
        assert client.put("/v1/streams/bad", json={**ONE, "labels": bad}).status_code == 422, bad
    assert client.get("/v1/streams", params={"label": "bad key:x"}).status_code == 422


def test_labels_survive_kill_9_and_the_client_pages_through_everything(tmp_path):
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for k in range(1203):  # more than a page of the client's (1,000)
                labels = {"site": "north" if k % 3 else "south"}
                assert c.put(f"/v1/streams/s{k:04d}", json={**ONE, "labels": labels}).status_code == 201
        server.kill()
        server = Server(tmp_path / "data").start()
        with Client(server.url) as tbptt:
            everything = tbptt.streams()
            assert [s["id"] for s in everything] == [f"s{k:04d}" for k in range(1203)]
            south = tbptt.streams(labels={"site": "south"})
            assert [s["id"] for s in south] == [f"s{k:04d}" for k in range(0, 1203, 3)]
            assert all(s["labels"] == {"site": "south"} for s in south)
    finally:
        server.stop()


@pytest.mark.parametrize("limit", [1, 7])
def test_every_stream_is_on_exactly_one_page(client, limit):
    for k in range(15):
        client.put(f"/v1/streams/x{k}", json={**ONE, "labels": {"even": str(k % 2 == 0)}})
    seen, cursor = [], None
    while True:
        body = page(client, limit=limit, label="even:True", **({"cursor": cursor} if cursor else {}))
        seen += [s["id"] for s in body["streams"]]
        if (cursor := body["next"]) is None:
            break
    assert seen == sorted(f"x{k}" for k in range(0, 15, 2))
