"""Changing a live stream with PATCH (a JSON merge patch of its config), through the real server: what may
change, what may not, exactly when it applies, and that it survives kill -9 like observations do."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from tbptt.models import Engine
from tbptt.service.schemas import StreamCreate
from tests.factories import sequence
from tests.service.server import Server

CONFIG = {
    "model": {"input_size": 2, "hidden_size": 8}, "tbptt": {"k1": 4}, "dtype": "float64", "normalize": False,
    "gate": False, "from_last_target": False, "optimizer": {"lr": 0.02}, "labels": {"site": "north"},
}  # fmt: skip
MERGE = {"Content-Type": "application/merge-patch+json"}


def observations(start: int, count: int) -> dict:
    xs, ys = sequence(2, 1, 80, seed=3)
    return {"observations": [{"x": x, "y": y, "seq": start + k + 1} for k, (x, y) in
                             enumerate(zip(xs[start : start + count], ys[start : start + count]))]}  # fmt: skip


def expected_predictions(changes: dict[int, dict]) -> list[list[float]]:
    """The same observations in process, the engine reconfigured after each step in ``changes``."""
    config = StreamCreate.model_validate(CONFIG).to_core()
    engine = Engine()
    engine.add_stream("s", config)
    xs, ys = sequence(2, 1, 80, seed=3)
    out = []
    for t, (x, y) in enumerate(zip(xs, ys), start=1):
        out.append(engine.observe("s", x, y).prediction)
        if t in changes:
            config = dataclasses.replace(config, **changes[t])
            engine.reconfigure("s", config)
    return out


def test_a_patch_changes_what_may_change_from_the_next_step(client):
    assert client.put("/v1/streams/s", json=CONFIG).status_code == 201
    first = client.post("/v1/streams/s/observations", json=observations(0, 30)).json()["results"]
    patch = {"optimizer": {"lr": 0.005, "weight_decay": 0.01}, "clip_grad_norm": 1.0, "labels": {"site": "south"}}
    response = client.patch("/v1/streams/s", json=patch, headers=MERGE)
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["effective_from_step"] == 31 and info["labels"] == {"site": "south"}
    assert (info["config"]["optimizer"]["lr"], info["config"]["clip_grad_norm"]) == (0.005, 1.0)
    assert client.get("/v1/streams/s").json()["config"] == info["config"]
    rest = client.post("/v1/streams/s/observations", json=observations(30, 50)).json()["results"]
    expected = expected_predictions({30: {"lr": 0.005, "weight_decay": 0.01, "clip_grad_norm": 1.0}})
    assert [r["prediction"] for r in first + rest] == expected  # float64: bit for bit
    assert [s["id"] for s in client.get("/v1/streams", params={"label": "site:south"}).json()["streams"]] == ["s"]
    back = client.patch("/v1/streams/s", json={"clip_grad_norm": None, "labels": {"site": None}})  # null: default
    assert back.status_code == 200 and back.json()["config"]["clip_grad_norm"] is None
    assert back.json()["labels"] == {} and back.json()["effective_from_step"] == 81


@pytest.mark.parametrize(
    "patch, status, loc",
    [
        ({"model": {"hidden_size": 16}}, 409, ["body", "model", "hidden_size"]),  # its network
        ({"optimizer": {"name": "sgd"}}, 409, ["body", "optimizer", "name"]),  # the state it keeps
        ({"tbptt": {"k1": 2}}, 409, ["body", "tbptt", "k1"]),  # its schedule
        ({"optimizer": {"lr": -1}}, 422, ["body", "optimizer", "lr"]),
        ({"nonsense": 1}, 422, ["body", "nonsense"]),
        ({"labels": {"bad:key": "x"}}, 422, ["body", "labels", "bad:key", "[key]"]),
    ],
)
def test_a_patch_that_cannot_apply_changes_nothing_and_names_the_field(client, patch, status, loc):
    assert client.put("/v1/streams/s", json=CONFIG).status_code == 201
    before = client.get("/v1/streams/s").json()
    response = client.patch("/v1/streams/s", json=patch)
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert client.get("/v1/streams/s").json() == before
    assert client.patch("/v1/streams/nope", json={"loss": "l1"}).status_code == 404
    assert client.patch("/v1/streams/s", content=b"[1]", headers=MERGE).status_code == 422


def test_kept_results_keep_the_anomalous_flag_of_their_time(client):
    assert client.put("/v1/streams/f", json={"model": {"input_size": 1}, "target": "next"}).status_code == 201
    values = [float(k % 5) for k in range(120)] + [500.0]
    body = {"observations": [{"x": v, "seq": k + 1} for k, v in enumerate(values)]}
    flagged = client.post("/v1/streams/f/observations", json=body).json()["results"][-1]
    assert flagged["anomalous"] is True
    assert client.patch("/v1/streams/f", json={"anomaly_threshold": 1.0}).status_code == 200
    again = client.post("/v1/streams/f/observations", json={"x": 500.0, "seq": 121}).json()["results"][0]
    assert again == {**flagged, "duplicate": True}  # a retry still gets its original result


def test_patches_survive_kill_9_before_and_after_a_checkpoint(tmp_path):
    server = Server(tmp_path / "data", TBPTT_CHECKPOINT_UPDATES="3").start()  # checkpoints every 3 updates
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.put("/v1/streams/s", json=CONFIG).status_code == 201
            first = c.post("/v1/streams/s/observations", json=observations(0, 30)).json()["results"]
            assert c.patch("/v1/streams/s", json={"optimizer": {"lr": 0.005}, "labels": {"k": "v"}}).status_code == 200
            middle = c.post("/v1/streams/s/observations", json=observations(30, 30)).json()["results"]
        server.kill()  # the patch is in a checkpoint now (8 updates since), and in the log
        server = Server(tmp_path / "data").start()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            info = c.get("/v1/streams/s").json()
            assert info["config"]["optimizer"]["lr"] == 0.005 and info["labels"] == {
                "site": "north",
                "k": "v",
            }  # merged
            assert c.patch("/v1/streams/s", json={"loss": "mse"}).status_code == 200  # only in the log
            last = c.post("/v1/streams/s/observations", json=observations(60, 20)).json()["results"]
        server.kill()
        server = Server(tmp_path / "data").start()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/v1/streams/s").json()["config"]["loss"] == "mse"
            kept = c.get("/v1/streams/s/predictions", params={"limit": 80}).json()["results"]
    finally:
        server.stop()
    expected = expected_predictions({30: {"lr": 0.005}, 60: {"loss": "mse"}})
    assert [r["prediction"] for r in first + middle + last] == expected  # float64: bit for bit
    assert [r["prediction"] for r in kept] == expected
