"""The hot paths' JSON: bodies validated from bytes in one pass (pydantic-core), replies written by orjson.

FastAPI would parse with the stdlib and validate the Python objects after, and build models for replies:
for a batch of 10,000 observations that is most of the request's time, on the event loop.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

REF = "#/components/schemas/{model}"
SCHEMAS: dict[str, Any] = {}  # components the documented bodies refer to (merged into the OpenAPI document)


class JSONBody:
    """A request body type: validates raw bytes, and documents itself in OpenAPI."""

    def __init__(self, annotation: Any, name: str, examples: list[Any] | None = None) -> None:
        self.adapter: TypeAdapter = TypeAdapter(annotation)
        schema = self.adapter.json_schema(ref_template=REF)
        SCHEMAS.update(schema.pop("$defs", {}))
        SCHEMAS[name] = schema
        content: dict[str, Any] = {"schema": {"$ref": REF.format(model=name)}}
        if examples:
            content["examples"] = {f"example {i + 1}": {"value": e} for i, e in enumerate(examples)}
        self.openapi = {"requestBody": {"required": True, "content": {"application/json": content}}}

    async def parse(self, request: Request) -> Any:
        try:
            return self.adapter.validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def reply(payload: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


def each_dumps(streams: list[str], results: list[list[Any]]) -> bytes:
    """A cross-stream reply's ``results`` (one observation per part): per part, its stream and its result."""
    return orjson.dumps([{"stream": stream, **r[0]} for stream, r in zip(streams, results)])


def each_spliced(streams: list[str], pieces: list[bytes]) -> bytes:
    """``each_dumps`` byte for byte, of results still JSON (each part's one result, as orjson wrote it:
    service/wire.py's ``results_json``), without reading them: a sharded front passes its shards' on so."""
    elements = []
    for stream, piece in zip(streams, pieces):
        if piece[:1] != b"{" or piece[:2] == b"{}":  # (a result has its seq and step: never empty)
            raise ValueError(f"not one result: {piece[:40]!r}")
        elements.append(b'{"stream":' + orjson.dumps(stream) + b"," + piece[1:])
    return b"[" + b",".join(elements) + b"]"
