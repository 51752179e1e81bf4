"""End to end: the real server (``tbptt serve``) on a free loopback port, driven over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time

import httpx
import pytest
import torch
from safetensors.torch import load as load_tensors
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

from tbptt.models import StreamConfig
from tbptt.service.client import Client
from tests.factories import sequence
from tests.reference import textbook
from tests.service.server import Server

STEPS = 1000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("e2e") / "data").start()
    yield s
    assert s.stop() == 0, s.output()  # SIGTERM: a clean exit


def create(server: Server, stream: str, config: dict) -> None:
    with Client(server.url) as tbptt:
        assert tbptt.create(stream, config)["steps"] == 0


def exact_config(cell: str) -> dict:
    return {
        "model": {"cell": cell, "input_size": 3, "hidden_size": 6, "output_size": 2},
        "tbptt": {"k1": 7},
        "optimizer": {"name": "adam", "lr": 0.01},
        "loss": "mse",
        "normalize": False,
        "from_last_target": False,  # the network on raw values, as the textbook loop
        "gate": False,  # ... and reported as it is
        "dtype": "float64",
        "seed": 3,
    }


def assert_exact(server: Server, stream: str, cell: str, predictions: list[list[float]], xs, ys) -> None:
    body = exact_config(cell)
    config = StreamConfig(
        cell=cell, input_size=3, hidden_size=6, output_size=2, k1=7, lr=0.01, loss="mse", normalize=False,
        from_last_target=False, gate=False, dtype="float64", seed=3,
    )  # fmt: skip
    assert body["optimizer"]["name"] == config.optimizer
    ref = textbook(config, xs, ys)
    for t, (got, want) in enumerate(zip(predictions, ref.predictions, strict=True), start=1):
        assert got == pytest.approx(want, abs=1e-10, rel=0), f"{stream}: prediction {t}"
    exported = load_tensors(httpx.get(f"{server.url}/v1/streams/{stream}/model").content)
    for name, value in ref.weights.items():
        torch.testing.assert_close(exported[name], value, atol=1e-10, rtol=0)
    assert httpx.get(f"{server.url}/v1/streams/{stream}").json()["updates"] == ref.updates


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_exact_learning_over_http(server, cell):
    stream = f"http-{cell}"
    create(server, stream, exact_config(cell))
    xs, ys = sequence(3, 2, STEPS, seed=11, missing_every=9)
    predictions = []
    with httpx.Client(base_url=server.url) as client:
        for start in range(0, STEPS, 97):  # batches, and single observations in between
            chunk = [{"x": x, "y": y} for x, y in zip(xs[start : start + 96], ys[start : start + 96])]
            results = client.post(f"/v1/streams/{stream}/observations", json={"observations": chunk}).json()["results"]
            predictions += [r["prediction"] for r in results]
            if start + 96 < STEPS:
                one = client.post(f"/v1/streams/{stream}/observations", json={"x": xs[start + 96], "y": ys[start + 96]})
                predictions.append(one.json()["results"][0]["prediction"])
    assert len(predictions) == STEPS
    assert_exact(server, stream, cell, predictions, xs, ys)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_exact_learning_over_websocket(server, cell):
    stream = f"ws-{cell}"
    create(server, stream, exact_config(cell))
    xs, ys = sequence(3, 2, STEPS, seed=12, missing_every=5)
    predictions = []
    with connect(f"{server.ws_url}/v1/streams/{stream}/ws") as ws:
        for x, y in zip(xs, ys):
            ws.send(json.dumps({"x": x, "y": y}))
            predictions.append(json.loads(ws.recv(timeout=30))["results"][0]["prediction"])
    assert_exact(server, stream, cell, predictions, xs, ys)


def test_50_clients_on_50_streams_at_once(server):
    streams = [f"many-{i}" for i in range(50)]
    for stream in streams:
        create(server, stream, {"model": {"input_size": 2}})

    async def client(stream: str) -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            steps = []
            for i in range(40):
                r = await c.post(f"/v1/streams/{stream}/observations", json={"x": [i, -i], "y": i % 3})
                steps.append(r.json()["results"][0]["step"])
            return steps

    async def everyone() -> list[list[int]]:
        return await asyncio.gather(*(client(s) for s in streams))

    for steps in asyncio.run(everyone()):
        assert steps == list(range(1, 41))  # acknowledged in order
    for stream in streams:
        assert httpx.get(f"{server.url}/v1/streams/{stream}").json()["steps"] == 40


def test_5_clients_on_one_stream_at_once(server):
    create(server, "shared", {"model": {"input_size": 1}})

    async def client(k: int) -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            results = []
            for i in range(40):
                r = await c.post("/v1/streams/shared/observations", json={"x": float(100 * k + i)})
                results += r.json()["results"]
            return results

    async def everyone() -> list[list[dict]]:
        return await asyncio.gather(*(client(k) for k in range(5)))

    acknowledged = [r for rs in asyncio.run(everyone()) for r in rs]
    assert sorted(r["step"] for r in acknowledged) == list(range(1, 201))  # each step exactly once
    assert all(r["seq"] == r["step"] for r in acknowledged)
    info = httpx.get(f"{server.url}/v1/streams/shared").json()
    assert (info["steps"], info["last_seq"]) == (200, 200)
    kept = httpx.get(f"{server.url}/v1/streams/shared/predictions", params={"limit": 200}).json()["results"]
    observed = [(r.pop("x"), r.pop("y")) for r in kept]  # /predictions: with each result's observation
    assert sorted(acknowledged, key=lambda r: r["step"]) == kept  # one consistent order
    assert sorted(x for (x,), _ in observed) == sorted(float(100 * k + i) for k in range(5) for i in range(40))


@pytest.mark.measurement
def test_healthz_stays_fast_while_1000_streams_learn(server, measure):
    """Tensor work never blocks the event loop. The load runs in two other processes, each posting an
    observation for every one of 1,000 streams five times a second (10,000 observations/s)."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for i in range(1000):
            c.put(f"/v1/streams/load-{i}", json={"model": {"input_size": 4}, "tbptt": {"k1": 4}})
    command = [sys.executable, "-m", "tests.service.load", server.url, "1000", "5", "9"]
    loaders = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    latencies = []
    time.sleep(1)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            started = time.perf_counter()
            assert c.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    applied = sum(int(p.communicate(timeout=60)[0]) for p in loaders)
    p50, p99 = statistics.quantiles(latencies, n=100)[49], statistics.quantiles(latencies, n=100)[98]
    print(f"\n/healthz p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(latencies)} requests; "
          f"{applied} observations applied meanwhile")  # fmt: skip
    assert applied >= 50_000, "the load did not run"
    measure("/healthz p99 while 1,000 streams learn", p99 * 1000, 50, " ms")
    assert p99 < 1.0, "the event loop was blocked"


def test_a_watcher_that_stops_reading_is_dropped_and_never_slows_the_stream(tmp_path):
    server = Server(tmp_path / "data", TBPTT_WATCH_QUEUE="4").start()
    try:
        create(server, "wide", {"model": {"input_size": 64, "hidden_size": 4}, "target": "next"})
        # max_queue=1: the client library stops reading the socket after one message, so TCP backs up
        # (and no keepalive pings, which an unread socket could not answer).
        with connect(f"{server.ws_url}/v1/streams/wide/watch", max_queue=1, ping_interval=None) as watcher:
            gen = torch.Generator().manual_seed(0)
            started = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=60) as c:
                for _ in range(40):  # about 0.7 MB of results per batch
                    xs = torch.randn(500, 64, generator=gen).tolist()
                    r = c.post("/v1/streams/wide/observations", json={"observations": [{"x": x} for x in xs]})
                    assert r.status_code == 200
            elapsed = time.monotonic() - started
            received, code = 0, None  # observations the watcher got (a batch may come in several messages)
            try:
                while True:
                    received += len(json.loads(watcher.recv(timeout=30))["results"])
            except Exception:  # closed
                code = watcher.close_code
        # Dropped: with 1013 if it reads again before the server gives up on it, else the connection is
        # simply gone (1006): a client that does not read cannot be told.
        assert code in (1013, 1006) and received < 20_000, (code, received)
        assert httpx.get(f"{server.url}/v1/streams/wide").json()["steps"] == 20_000
        print(
            f"\n40 batches applied in {elapsed:.1f} s with a stuck watcher; it got {received:,} observations before 1013"
        )
    finally:
        assert server.stop() == 0


def test_a_streaming_client_that_stops_reading_is_dropped_after_the_send_timeout(tmp_path):
    """A raw client (websockets' sans-I/O protocol over a plain socket: no library thread that could
    block on our behalf) sends batches whose replies it does not read: the server gives up on it after
    TBPTT_WS_SEND_TIMEOUT, flushes what it had written and closes; the stream is never held up."""
    server = Server(tmp_path / "data", TBPTT_WS_SEND_TIMEOUT="1").start()
    try:
        create(server, "wide", {"model": {"input_size": 64, "hidden_size": 4}, "target": "next"})
        gen = torch.Generator().manual_seed(0)
        messages = [
            json.dumps({"observations": [{"x": x} for x in torch.randn(500, 64, generator=gen).tolist()]})
            for _ in range(4)
        ]  # about 0.7 MB of results per message
        protocol = ClientProtocol(parse_uri(f"{server.ws_url}/v1/streams/wide/ws"), max_size=None)
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
            protocol.send_request(protocol.connect())
            sock.sendall(b"".join(protocol.data_to_send()))
            while protocol.state is State.CONNECTING:
                protocol.receive_data(sock.recv(65536))
            sent = 0
            with contextlib.suppress(TimeoutError, ConnectionResetError):  # it stopped reading us, or dropped us
                for i in range(40):
                    protocol.send_text(messages[i % 4].encode())
                    sock.sendall(b"".join(protocol.data_to_send()))
                    sent += 1
            time.sleep(3)  # not reading: the server's send times out after 1 s
            started = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=10) as c:  # the stream itself is not held up
                assert c.post("/v1/streams/wide/observations", json={"x": [0.0] * 64}).status_code == 200
            assert time.monotonic() - started < 2
            replies = 0
            sock.settimeout(10)  # a TimeoutError here: the server never gave up on us
            with contextlib.suppress(ConnectionResetError):  # closed with our unread messages: a reset
                while data := sock.recv(1 << 20):
                    protocol.receive_data(data)
                    replies += sum(isinstance(e, Frame) and e.opcode is Opcode.TEXT for e in protocol.events_received())
        assert replies < sent, (replies, sent)
        print(f"\nsent {sent} batches without reading; dropped after {replies} replies")
    finally:
        assert server.stop() == 0


def test_exact_under_micro_batching_with_many_streams_interleaved(tmp_path):
    """Concurrent clients on 12 streams (4 per cell type), the engine waiting 2 ms to batch them together:
    every prediction and the final weights still equal each stream's own reference loop."""
    server = Server(tmp_path / "data", TBPTT_BATCH_WAIT_MS="2").start()
    cells = [cell for cell in ("rnn", "gru", "lstm") for _ in range(4)]
    streams = [f"mb-{k}" for k in range(len(cells))]
    data = {s: sequence(3, 2, 300, seed=40 + k, missing_every=7) for k, s in enumerate(streams)}
    try:
        for stream, cell in zip(streams, cells):
            create(server, stream, exact_config(cell))

        async def client(stream: str) -> list[list[float]]:
            xs, ys = data[stream]
            predictions = []
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                for start in range(0, 300, 3):  # small batches, so requests of all streams overlap
                    chunk = [{"x": x, "y": y} for x, y in zip(xs[start : start + 3], ys[start : start + 3])]
                    r = await c.post(f"/v1/streams/{stream}/observations", json={"observations": chunk})
                    predictions += [res["prediction"] for res in r.json()["results"]]
            return predictions

        async def everyone():
            return await asyncio.gather(*(client(s) for s in streams))

        for stream, cell, predictions in zip(streams, cells, asyncio.run(everyone())):
            assert_exact(server, stream, cell, predictions, *data[stream])
        batches = float(next(line.split()[1] for line in httpx.get(f"{server.url}/metrics").text.splitlines()
                             if line.startswith("tbptt_engine_batch_seconds_count")))  # fmt: skip
        assert batches < 1200, "requests were not batched together"  # 1,200 requests in all
    finally:
        server.stop()
