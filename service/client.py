"""A small client for the service, over httpx (sync and async) and websockets.

    from tbptt.service.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as tbptt:
        tbptt.create("pump-7", {"model": {"input_size": 3}})
        results = tbptt.observe("pump-7", [{"x": [0.5, 1.2, -0.3], "y": 2.0}])
        print(results[0]["prediction"], tbptt.metrics("pump-7")["prequential"])

        with tbptt.stream("pump-7") as ws:          # one WebSocket, replies in order
            print(ws.send({"x": [0.6, 1.1, -0.2], "y": 2.1})[0]["step"])

``AsyncClient`` has the same verbs, awaited (``async with tbptt.stream(...)`` for the WebSocket): both are
built from one set of request builders (``_Verbs``), so they cannot drift apart. A batch longer than the
server's limit (``max_batch``, 10,000 by default) is sent as several requests, in order; each is applied
whole or not at all. Errors come back as ``APIError`` with the HTTP status and the service's ``detail``.
Only httpx and websockets are needed: this module imports nothing of the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx

Observation = dict[str, Any]  # {"x": ..., "y": ..., "seq": ...}; with "stream" for observe_many
MAX_BATCH = 10_000  # the server's default TBPTT_MAX_BATCH
MAX_PAGE = 1000  # streams per page of a listing, at most


class APIError(Exception):
    """The service refused a request: ``status`` (HTTP, or 422 for a WebSocket reply) and its ``detail``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class _Call:
    """One HTTP request of a verb, and how its response is read."""

    method: str
    path: str
    read: Callable[[httpx.Response], Any]
    options: dict[str, Any] = field(default_factory=dict)  # json=, params=, content=, headers=


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise APIError(response.status_code, detail)
    return response


def _json(response: httpx.Response) -> Any:
    return _check(response).json()


def _results(response: httpx.Response) -> list[dict[str, Any]]:
    return _check(response).json()["results"]


def _nothing(response: httpx.Response) -> None:
    _check(response)


def _concat(parts: list[Any]) -> Any:
    return [item for part in parts for item in part]


def _only(parts: list[Any]) -> Any:
    (value,) = parts
    return value


class _Verbs:
    """Every verb as the requests it makes; ``_run`` sends them (sync or async) and combines the answers."""

    max_batch: int

    def _run(self, calls: list[_Call], combine: Callable[[list[Any]], Any] = _only) -> Any:
        raise NotImplementedError

    def create(self, stream: str, config: dict[str, Any]) -> Any:
        """Create a stream (or confirm it with the same config); its info."""
        return self._run([_Call("PUT", f"/v1/streams/{stream}", _json, {"json": config})])

    def info(self, stream: str) -> Any:
        return self._run([_Call("GET", f"/v1/streams/{stream}", _json)])

    def streams_page(
        self, cursor: str | None = None, limit: int = MAX_PAGE, prefix: str = "", labels: dict[str, str] | None = None
    ) -> Any:
        """One page of the streams by id, ``{"streams", "next", "total"}``: pass ``next`` as ``cursor`` for the
        following page (None: that was the last). ``labels``: only streams with every one of these."""
        params: dict[str, Any] = {
            "limit": limit,
            "prefix": prefix,
            "label": [f"{k}:{v}" for k, v in (labels or {}).items()],
        }
        if cursor is not None:
            params["cursor"] = cursor
        return self._run([_Call("GET", "/v1/streams", _json, {"params": params})])

    def delete(self, stream: str) -> Any:
        return self._run([_Call("DELETE", f"/v1/streams/{stream}", _nothing)])

    def reset(self, stream: str, hidden: bool = True, weights: bool = False) -> Any:
        body = {"hidden": hidden, "weights": weights}
        return self._run([_Call("POST", f"/v1/streams/{stream}/reset", _json, {"json": body})])

    def observe(self, stream: str, observations: Sequence[Observation]) -> Any:
        """Apply observations in order; a result per observation."""
        return self._batches(f"/v1/streams/{stream}/observations", observations)

    def observe_many(self, observations: Sequence[Observation]) -> Any:
        """Observations that each name their ``stream``, applied in one request (per ``max_batch``)."""
        return self._batches("/v1/observations", observations)

    def predictions(self, stream: str, limit: int | None = None) -> Any:
        """The most recent results (None: the service's default, 100 or as many as one reply carries)."""
        params = {} if limit is None else {"limit": limit}
        return self._run([_Call("GET", f"/v1/streams/{stream}/predictions", _results, {"params": params})])

    def metrics(self, stream: str) -> Any:
        return self._run([_Call("GET", f"/v1/streams/{stream}/metrics", _json)])

    def anomalies(self, since: int = 0, limit: int = 100, openings: bool = False) -> Any:
        """One page of the alerts feed after id ``since``, ``{"anomalies", "next"}``: poll on from ``next``.
        ``openings``: only the alerts that open an episode (a page may then hold none while more follow)."""
        params = {"since": since, "limit": limit, "openings": openings}
        return self._run([_Call("GET", "/v1/anomalies", _json, {"params": params})])

    def export_model(self, stream: str) -> Any:
        """The model as safetensors bytes."""
        return self._run([_Call("GET", f"/v1/streams/{stream}/model", lambda r: _check(r).content)])

    def import_model(self, stream: str, data: bytes) -> Any:
        options = {"content": data, "headers": {"Content-Type": "application/octet-stream"}}
        return self._run([_Call("PUT", f"/v1/streams/{stream}/model", _json, options)])

    def _batches(self, path: str, observations: Sequence[Observation]) -> Any:
        size = self.max_batch
        chunks = [list(observations[k : k + size]) for k in range(0, len(observations), size)] or [[]]
        return self._run([_Call("POST", path, _results, {"json": {"observations": c}}) for c in chunks], _concat)


class Client(_Verbs):
    """Synchronous client."""

    def __init__(
        self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60,
        max_batch: int = MAX_BATCH,
    ) -> None:  # fmt: skip
        self.url, self.api_key, self.max_batch = url.rstrip("/"), api_key, max_batch
        self.http = httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _run(self, calls: list[_Call], combine: Callable[[list[Any]], Any] = _only) -> Any:
        return combine([c.read(self.http.request(c.method, c.path, **c.options)) for c in calls])

    def streams(self, prefix: str = "", labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every stream (with this id prefix and these labels), page after page."""
        found, cursor = [], None
        while True:
            page = self.streams_page(cursor, prefix=prefix, labels=labels)
            found += page["streams"]
            if (cursor := page["next"]) is None:
                return found

    def stream(self, stream: str) -> Streaming:
        """A WebSocket to the stream: ``send`` observations, get their results, in order."""
        return Streaming(_ws_url(self.url, f"/v1/streams/{stream}/ws"), self.api_key)


class AsyncClient(_Verbs):
    """Asynchronous client: the same verbs as ``Client``, awaited."""

    def __init__(
        self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60,
        max_batch: int = MAX_BATCH,
    ) -> None:  # fmt: skip
        self.url, self.api_key, self.max_batch = url.rstrip("/"), api_key, max_batch
        self.http = httpx.AsyncClient(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _run(self, calls: list[_Call], combine: Callable[[list[Any]], Any] = _only) -> Any:  # type: ignore[override]
        return combine([c.read(await self.http.request(c.method, c.path, **c.options)) for c in calls])

    async def streams(self, prefix: str = "", labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every stream (with this id prefix and these labels), page after page."""
        found, cursor = [], None
        while True:
            page = await self.streams_page(cursor, prefix=prefix, labels=labels)
            found += page["streams"]
            if (cursor := page["next"]) is None:
                return found

    def stream(self, stream: str) -> AsyncStreaming:
        """A WebSocket to the stream: ``await send(...)`` observations, get their results, in order."""
        return AsyncStreaming(_ws_url(self.url, f"/v1/streams/{stream}/ws"), self.api_key)


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
        self.ws.send(_message(observations))
        return _reply(self.ws.recv())


class AsyncStreaming:
    """An asynchronous WebSocket session with one stream."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url, self.api_key = url, api_key

    async def __aenter__(self) -> AsyncStreaming:
        from websockets.asyncio.client import connect

        self._stack = AsyncExitStack()
        self.ws = await self._stack.enter_async_context(connect(self.url, additional_headers=_headers(self.api_key)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def send(self, observations: Observation | Sequence[Observation]) -> list[dict[str, Any]]:
        await self.ws.send(_message(observations))
        return _reply(await self.ws.recv())


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _message(observations: Observation | Sequence[Observation]) -> str:
    return json.dumps(observations if isinstance(observations, dict) else {"observations": list(observations)})


def _reply(text: str | bytes) -> list[dict[str, Any]]:
    reply = json.loads(text)
    if "detail" in reply:
        raise APIError(422, reply["detail"])
    return reply["results"]


def _ws_url(url: str, path: str) -> str:
    return (
        "wss://" + url[len("https://") :] if url.startswith("https://") else "ws://" + url.split("://", 1)[-1]
    ) + path
