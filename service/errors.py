"""Domain errors: small classes carrying data, mapped to HTTP status codes in one place (``install``), with
the learning core's own errors (``tbptt.models.CoreError``) that reach a client.

WebSockets answer the same ``detail`` in a reply, or close with the codes named in ``ws``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from tbptt.models import CoreError, StreamNotFound
from tbptt.models.errors import rebuilt

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status = 500

    def detail(self) -> Any:
        return str(self)

    def __reduce__(self) -> tuple[Any, ...]:  # as it is across processes (a shard's answer to the front)
        return rebuilt, (type(self), self.args, self.__dict__)


class StreamConflict(ServiceError):
    status = 409

    def __init__(self, stream: str, what: str = "config", differences: Sequence[tuple[str, Any, Any]] = ()) -> None:
        """``differences``: where the configs differ, as the body names the field, the stream's value and the
        one asked (a default that changed since the stream was created is the usual cause: the message says
        which, so that the sender can name the stream's value instead of deleting what it learnt)."""
        if what == "labels":
            super().__init__(f"stream {stream!r} exists with other labels; change them with PATCH /v1/streams/{stream}")
        else:
            named = ", ".join(
                f"{where} {json.dumps(kept)} there, {json.dumps(asked)} here" for where, kept, asked in differences
            )
            super().__init__(
                f"stream {stream!r} exists with another config{f' ({named})' if named else ''}; send its config "
                f"(GET /v1/streams/{stream}), or delete it first, or use another id"
            )


class StreamReplaced(ServiceError):
    """A socket's stream was deleted; a stream created since under the same id is another stream."""

    status = 404

    def __init__(self, stream: str) -> None:
        super().__init__(f"stream {stream!r} was deleted; one created since with that id is another stream")


class LimitReached(ServiceError):
    """A quota (streams per tenant, in all) would be exceeded."""

    status = 403


class Invalid(ServiceError):
    """Input that passed the schema but breaks a rule that depends on the stream (FastAPI's list form)."""

    status = 422

    def __init__(self, loc: Sequence[str | int], msg: str, type_: str = "value_error") -> None:
        super().__init__(msg)
        self.errors = [{"loc": list(loc), "msg": msg, "type": type_}]

    @classmethod
    def listing(cls, errors: list[dict[str, Any]]) -> Invalid:
        """A 422 with several errors (FastAPI's form: loc, msg, type each), as a body validated off the event
        loop fails."""
        first = validation_errors(errors)
        invalid = cls(first[0]["loc"], first[0]["msg"], first[0]["type"])
        invalid.errors = first
        return invalid

    def detail(self) -> Any:
        return self.errors


class Conflict(Invalid):
    """An observation that contradicts what the stream has applied (a reused seq with other values, a
    timestamp out of order): refused, with nothing of its request applied."""

    status = 409


class StorageFull(ServiceError):
    """The store refused a write; nothing was applied and reads keep working."""

    status = 507

    def __init__(self, reason: str) -> None:
        super().__init__(f"storage unavailable, nothing was applied: {reason}")


class Unavailable(ServiceError):
    """503. ``retry_after`` (seconds) when trying again will work (recovering); None when it will not
    until someone acts (the engine failed, the service is stopping, a stream is damaged)."""

    status = 503

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


UNION_TAGS = {"single-observation", "observation-batch"}  # which branch of a body union: not a field


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's 422 list, without the offending input: echoing it could fail (a NaN is not JSON) or leak."""
    return [
        {
            "loc": [part for part in e.get("loc", ()) if part not in UNION_TAGS],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


def status_and_detail(exc: ServiceError | CoreError) -> tuple[int, Any]:
    """The HTTP status and ``detail`` of a domain error (the core's: 404 for an unknown stream, else 422)."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.detail()
    return (404 if isinstance(exc, StreamNotFound) else 422), str(exc)


CLIENT_CLOSED_REQUEST = 499


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    @app.exception_handler(CoreError)
    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError | CoreError)
        status, detail = status_and_detail(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        headers = exc.headers() if isinstance(exc, Unavailable) else None
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        """The client went before its request's body was complete (or the body paused past TBPTT_BODY_TIMEOUT
        and the protocol answered 408): nobody is there to answer, and it is no error of the server's, which
        logged a traceback for it. 499 (nginx's "client closed request") is what the request metrics count."""
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)
