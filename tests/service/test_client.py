"""The Python client (tbptt.service.client) against a real server: the same verbs sync and async, WebSockets."""

from __future__ import annotations

import asyncio

import pytest
from safetensors.torch import load as load_tensors

from tbptt.service.client import APIError, AsyncClient, Client
from tests.service.server import Server

KEY = "client-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("client") / "data", TBPTT_API_KEYS=f"team:{KEY}").start()
    yield s
    assert s.stop() == 0


def test_sync_client_covers_the_api(server):
    with Client(server.url, api_key=KEY) as tbptt:
        info = tbptt.create("pump-7", {"model": {"input_size": 2}, "tbptt": {"k1": 2}, "normalize": False})
        assert info["id"] == "pump-7" and tbptt.create(
            "pump-7", {"model": {"input_size": 2}, "tbptt": {"k1": 2}, "normalize": False}
        )
        results = tbptt.observe("pump-7", [{"x": [1, 2], "y": 0.5}, {"x": [2, 3], "y": 0.7}])
        assert [r["step"] for r in results] == [1, 2] and results[1]["updated"]
        assert tbptt.observe_many([{"stream": "pump-7", "x": [0, 1]}])[0]["stream"] == "pump-7"
        assert [s["id"] for s in tbptt.streams()] == ["pump-7"]
        assert tbptt.metrics("pump-7")["steps"] == 3 and len(tbptt.predictions("pump-7", limit=2)) == 2
        model = tbptt.export_model("pump-7")
        assert "head.weight" in load_tensors(model) and tbptt.import_model("pump-7", model)["id"] == "pump-7"
        assert tbptt.reset("pump-7", weights=True)["steps"] == 3
        assert tbptt.anomalies() == {"anomalies": [], "next": 0}  # (three readings: none judged yet)
        tbptt.create("boiler", {"model": {"input_size": 1}, "target": "next"})
        readings = [{"x": 20.0 + (k % 7) * 0.3} for k in range(120)]
        readings[100] = {"x": 80.0}  # beyond every earlier reading, and its echo after it
        tbptt.observe("boiler", readings)
        feed = tbptt.anomalies(limit=10)
        assert [a["seq"] for a in feed["anomalies"]][:1] == [101] and feed["next"] == feed["anomalies"][-1]["id"]
        assert tbptt.anomalies(openings=True)["anomalies"] == [a for a in feed["anomalies"] if a["opens"]]
        assert tbptt.anomalies(since=feed["next"]) == {"anomalies": [], "next": feed["next"]}
        tbptt.delete("boiler")
        with tbptt.stream("pump-7") as ws:
            assert ws.send({"x": [3, 4]})[0]["step"] == 4
            assert [r["step"] for r in ws.send([{"x": [4, 5]}, {"x": [5, 6]}])] == [5, 6]
            with pytest.raises(APIError):
                ws.send({"x": [1, 2, 3]})
        with pytest.raises(APIError) as missing:
            tbptt.info("nope")
        assert missing.value.status == 404
        tbptt.delete("pump-7")
    with Client(server.url, api_key="wrong-key-wrong-key") as stranger, pytest.raises(APIError) as refused:
        stranger.streams()
    assert refused.value.status == 401


def test_async_client_has_every_verb_of_the_sync_one(server):
    verbs = {name for name in dir(Client) if not name.startswith("_") and callable(getattr(Client, name))}
    assert verbs - {"close"} <= {name for name in dir(AsyncClient) if not name.startswith("_")}

    async def go():
        async with AsyncClient(server.url, api_key=KEY) as tbptt:
            await tbptt.create("a", {"model": {"input_size": 1}})
            results = await asyncio.gather(*(tbptt.observe("a", [{"x": float(i)}]) for i in range(10)))
            assert sorted(r[0]["step"] for r in results) == list(range(1, 11))
            assert (await tbptt.metrics("a"))["steps"] == 10
            assert await tbptt.anomalies(since=5, openings=True) == {"anomalies": [], "next": 5}
            assert len(await tbptt.predictions("a", limit=3)) == 3 and (await tbptt.info("a"))["steps"] == 10
            model = await tbptt.export_model("a")
            assert (await tbptt.import_model("a", model))["id"] == "a"
            assert (await tbptt.reset("a"))["steps"] == 10
            async with tbptt.stream("a") as ws:
                assert (await ws.send({"x": 1.0}))[0]["step"] == 11
                with pytest.raises(APIError):
                    await ws.send({"x": [1.0, 2.0]})
            await tbptt.delete("a")
            assert await tbptt.streams() == []

    asyncio.run(go())


def test_a_batch_over_the_limit_is_sent_in_parts_in_order(server):
    with Client(server.url, api_key=KEY, max_batch=7) as tbptt:
        tbptt.create("long", {"model": {"input_size": 1}, "target": "next"})
        results = tbptt.observe("long", [{"x": float(k)} for k in range(30)])
        assert [r["step"] for r in results] == list(range(1, 31))
        many = tbptt.observe_many([{"stream": "long", "x": float(k)} for k in range(15)])
        assert [r["step"] for r in many] == list(range(31, 46))
        tbptt.delete("long")
