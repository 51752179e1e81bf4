"""A small client for the service, over httpx (sync and async) and websockets.

    from tbptt.service.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as tbptt:
        tbptt.create("pump-7", {"model": {"input_size": 3}})
        results = tbptt.observe("pump-7", [{"x": [0.5, 1.2, -0.3], "y": 2.0}])
        print(results[0]["prediction"], tbptt.metrics("pump-7")["prequential"])

        with tbptt.stream("pump-7") as ws:          # one WebSocket, replies in order
            print(ws.send({"x": [0.6, 1.1, -0.2], "y": 2.1})[0]["step"])

Errors come back as ``ServiceError`` with the HTTP status and the service's ``detail``. Only httpx and
websockets are needed: this module imports nothing of the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any

import httpx

Observation = dict[str, Any]  # {"x": ..., "y": ..., "seq": ...}


class ServiceError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise ServiceError(response.status_code, detail)
    return response


def _batch(observations: Iterable[Observation]) -> dict[str, list[Observation]]:
    return {"observations": list(observations)}


class Client:
    """Synchronous client."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60) -> None:
        self.url, self.api_key = url.rstrip("/"), api_key
        self.http = httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def create(self, stream: str, config: dict[str, Any]) -> dict[str, Any]:
        """Create a stream (or confirm it with the same config); its info."""
        return _check(self.http.put(f"/v1/streams/{stream}", json=config)).json()

    def info(self, stream: str) -> dict[str, Any]:
        return _check(self.http.get(f"/v1/streams/{stream}")).json()

    def streams(self) -> list[dict[str, Any]]:
        return _check(self.http.get("/v1/streams")).json()["streams"]

    def delete(self, stream: str) -> None:
        _check(self.http.delete(f"/v1/streams/{stream}"))

    def reset(self, stream: str, hidden: bool = True, weights: bool = False) -> dict[str, Any]:
        return _check(self.http.post(f"/v1/streams/{stream}/reset", json={"hidden": hidden, "weights": weights})).json()

    def observe(self, stream: str, observations: Sequence[Observation]) -> list[dict[str, Any]]:
        """Apply observations in order; a result per observation."""
        response = self.http.post(f"/v1/streams/{stream}/observations", json=_batch(observations))
        return _check(response).json()["results"]

    def observe_many(self, observations: Sequence[Observation]) -> list[dict[str, Any]]:
        """Observations that each name their ``stream``, applied in one request."""
        return _check(self.http.post("/v1/observations", json=_batch(observations))).json()["results"]

    def predictions(self, stream: str, limit: int = 100) -> list[dict[str, Any]]:
        return _check(self.http.get(f"/v1/streams/{stream}/predictions", params={"limit": limit})).json()["results"]

    def metrics(self, stream: str) -> dict[str, Any]:
        return _check(self.http.get(f"/v1/streams/{stream}/metrics")).json()

    def export_model(self, stream: str) -> bytes:
        return _check(self.http.get(f"/v1/streams/{stream}/model")).content

    def import_model(self, stream: str, data: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/octet-stream"}
        return _check(self.http.put(f"/v1/streams/{stream}/model", content=data, headers=headers)).json()

    def stream(self, stream: str) -> Streaming:
        """A WebSocket to the stream: ``send`` observations, get their results, in order."""
        return Streaming(_ws_url(self.url, f"/v1/streams/{stream}/ws"), self.api_key)


class Streaming:
    """A synchronous WebSocket session with one stream."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url, self.api_key = url, api_key

    def __enter__(self) -> Streaming:
        from websockets.sync.client import connect

        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(self.url, additional_headers=_headers(self.api_key)))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def send(self, observations: Observation | Sequence[Observation]) -> list[dict[str, Any]]:
        body = observations if isinstance(observations, dict) else _batch(observations)
        self.ws.send(json.dumps(body))
        reply = json.loads(self.ws.recv())
        if "detail" in reply:
            raise ServiceError(422, reply["detail"])
        return reply["results"]


class AsyncClient:
    """Asynchronous client, the same verbs as ``Client``."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60) -> None:
        self.url, self.api_key = url.rstrip("/"), api_key
        self.http = httpx.AsyncClient(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.aclose()

    async def create(self, stream: str, config: dict[str, Any]) -> dict[str, Any]:
        return _check(await self.http.put(f"/v1/streams/{stream}", json=config)).json()

    async def info(self, stream: str) -> dict[str, Any]:
        return _check(await self.http.get(f"/v1/streams/{stream}")).json()

    async def streams(self) -> list[dict[str, Any]]:
        return _check(await self.http.get("/v1/streams")).json()["streams"]

    async def delete(self, stream: str) -> None:
        _check(await self.http.delete(f"/v1/streams/{stream}"))

    async def observe(self, stream: str, observations: Sequence[Observation]) -> list[dict[str, Any]]:
        response = await self.http.post(f"/v1/streams/{stream}/observations", json=_batch(observations))
        return _check(response).json()["results"]

    async def observe_many(self, observations: Sequence[Observation]) -> list[dict[str, Any]]:
        return _check(await self.http.post("/v1/observations", json=_batch(observations))).json()["results"]

    async def metrics(self, stream: str) -> dict[str, Any]:
        return _check(await self.http.get(f"/v1/streams/{stream}/metrics")).json()

    async def predictions(self, stream: str, limit: int = 100) -> list[dict[str, Any]]:
        response = await self.http.get(f"/v1/streams/{stream}/predictions", params={"limit": limit})
        return _check(response).json()["results"]


def _ws_url(url: str, path: str) -> str:
    return (
        "wss://" + url[len("https://") :] if url.startswith("https://") else "ws://" + url.split("://", 1)[-1]
    ) + path
