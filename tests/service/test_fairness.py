"""One tenant's heavy work, within its limits, does not stall another tenant's small requests.

Through the real app: tenant alpha sends one batch of heavy observations (an update at every step); once
a watcher of its stream has seen the first slice applied, tenant beta sends one small observation, which
must be answered while alpha's batch is still being applied. Ordering, not timing: it holds on a busy
machine, and before slices existed beta's request always waited for all of alpha's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from tbptt.service.settings import Settings

from .factories import app_client, wait_ready

KEY_A, KEY_B = "a" * 32, "b" * 32
A, B = {"Authorization": f"Bearer {KEY_A}"}, {"Authorization": f"Bearer {KEY_B}"}
HEAVY = {"model": {"input_size": 64, "hidden_size": 128}, "tbptt": {"k1": 1, "k2": 64}}  # ~16 M MACs a step


def test_a_small_request_is_answered_between_slices_of_another_tenants_batch(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", api_keys=f"alpha:{KEY_A},beta:{KEY_B}", engine_slice_ms=5)
    with app_client(settings) as c:
        wait_ready(c)
        create_heavy_and_small(c)
        # (a copy: starlette's websocket_connect adds its handshake's headers to the dict it is given)
        with c.websocket_connect("/v1/streams/heavy/watch", headers=dict(A)) as watch:
            assert_answered_between_slices(c, watch.receive_json)


def create_heavy_and_small(c: httpx.Client) -> None:
    assert c.put("/v1/streams/heavy", json=HEAVY, headers=A).status_code == 201
    assert c.put("/v1/streams/small", json={"model": {"input_size": 1}}, headers=B).status_code == 201


def assert_answered_between_slices(c: httpx.Client, first_batch: Callable[[], dict]) -> None:
    """Alpha posts a heavy batch to its stream "heavy" (from another thread); once ``first_batch`` (what a
    watcher of that stream receives first) shows a first slice applied and not the rest, beta's one
    observation to its stream "small" must be answered before alpha's batch is; then all of alpha's is
    applied, in order."""
    heavy = {"observations": [{"x": [0.01 * k] * 64, "y": [1.0]} for k in range(400)]}
    done: dict[str, float] = {}

    def send_heavy() -> None:
        r = c.post("/v1/streams/heavy/observations", json=heavy, headers=A)
        assert r.status_code == 200, r.text
        done["alpha"] = time.monotonic()

    sender = threading.Thread(target=send_heavy)
    sender.start()
    first = first_batch()  # a first slice of alpha's batch is applied; the rest is not
    assert 0 < len(first["results"]) < 400, "alpha's batch was applied whole"
    r = c.post("/v1/streams/small/observations", json={"x": [1.0], "y": [1.0]}, headers=B)
    done["beta"] = time.monotonic()
    assert r.status_code == 200, r.text
    sender.join(timeout=300)
    assert "alpha" in done, "alpha's batch never finished"
    assert done["beta"] < done["alpha"], "beta's one observation waited for all of alpha's batch"
    results = c.get("/v1/streams/heavy/predictions", params={"limit": 400}, headers=A).json()["results"]
    assert [r["step"] for r in results] == list(range(1, 401))  # all applied, in order


def test_a_stream_whose_one_update_would_hold_everyone_up_is_refused_with_the_setting(tmp_path):
    """The largest allowed LSTM with k1=1, k2=1024 ran about a second per observation: one update runs
    whole, so its size is bounded (estimated multiply-adds), and the refusal says what to lower."""
    with app_client(Settings(data_dir=tmp_path / "data")) as c:
        wait_ready(c)
        maximal = {"model": {"input_size": 1024, "output_size": 1024, "hidden_size": 256, "num_layers": 4,
                             "cell": "lstm"}, "tbptt": {"k1": 1, "k2": 1024}}  # fmt: skip
        r = c.put("/v1/streams/maximal", json=maximal)
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "tbptt", "k2"] and "TBPTT_MAX_UPDATE_MMACS" in error["msg"]
        maximal["tbptt"]["k2"] = 16  # the same network, a shorter window: allowed
        assert c.put("/v1/streams/maximal", json=maximal).status_code == 201


def test_predictions_of_a_wide_stream_come_in_replies_of_bounded_size(tmp_path):
    """Four reads of 10,000 results of 1,024 outputs (194 MiB each) held everyone up for seconds."""
    with app_client(Settings(data_dir=tmp_path / "data")) as c:
        wait_ready(c)
        assert c.put("/v1/streams/wide", json={"model": {"input_size": 1024}, "target": "next"}).status_code == 201
        for _ in range(3):
            batch = {"observations": [{"x": [float(k)] * 1024} for k in range(100)]}
            assert c.post("/v1/streams/wide/observations", json=batch).status_code == 200
        r = c.get("/v1/streams/wide/predictions", params={"limit": 10_000})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]
        fit = (1 << 18) // (1024 + 3 * 1024)  # values per result: x, the prediction and its interval
        assert f"at most {fit} results" in r.json()["detail"][0]["msg"]
        assert len(c.get("/v1/streams/wide/predictions").json()["results"]) == fit  # the default, as many as fit
        assert len(c.get("/v1/streams/wide/predictions", params={"limit": fit}).json()["results"]) == fit
