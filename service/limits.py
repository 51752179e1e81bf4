"""Limits that depend on settings: checked where the schema cannot, and shown in the OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tbptt.models import InvalidConfig, update_macs
from tbptt.models import StreamConfig as CoreConfig

from .errors import Invalid
from .schemas import BODY_FIELDS, ModelSpec, TBPTTSpec
from .settings import Settings

if TYPE_CHECKING:
    from .ingest import Loc, Part
    from .streams import StreamState

SPEC_SCHEMAS = {"model": ModelSpec.__name__, "tbptt": TBPTTSpec.__name__}  # body section -> OpenAPI component

# Config field -> the setting that bounds it in this service (at most the core's CEILINGS, which bound the
# setting itself and the schema). Where the field sits in the body comes from schemas.BODY_FIELDS.
SETTINGS = {
    "input_size": "max_input_size",
    "output_size": "max_output_size",
    "hidden_size": "max_hidden_size",
    "num_layers": "max_num_layers",
    "k1": "max_k2",
    "k2": "max_k2",
}


def check_model(config: CoreConfig, settings: Settings, at: Loc = ("body",)) -> None:
    """A 422 naming the first field beyond its configured limit, or k2 if one update would be more work than
    the service allows (one update runs whole: everyone else waits for it); ``at``: where the config is in
    the body."""
    for field, setting in SETTINGS.items():
        limit = getattr(settings, setting)
        if getattr(config, field) > limit:
            loc = (*at, *BODY_FIELDS[field])
            raise Invalid(loc, f"must be at most {limit} (TBPTT_{setting.upper()}), got {getattr(config, field)}")
    mmacs = update_macs(config) / 1e6
    if mmacs > settings.max_update_mmacs:
        raise Invalid(
            (*at, *BODY_FIELDS["k2"]),
            f"one update of this stream would be about {mmacs:,.0f} million multiply-adds (3 x k2 x one step's), "
            f"more than {settings.max_update_mmacs:,.0f} (TBPTT_MAX_UPDATE_MMACS): lower k2, hidden_size, "
            "num_layers or the input and output sizes",
        )


def invalid_config(exc: InvalidConfig, at: Loc = ("body",)) -> Invalid:
    """The core's refusal of a config as a 422 naming the field where it is in the body (the config at
    ``at``)."""
    return Invalid((*at, *BODY_FIELDS.get(exc.field or "", (exc.field,) if exc.field else ())), str(exc))


def check_batch(count: int, settings: Settings, loc: Loc = ("body", "observations")) -> None:
    if count > settings.max_batch:
        raise Invalid(loc, f"at most {settings.max_batch} observations per request (TBPTT_MAX_BATCH), got {count}")


def document(schemas: dict[str, Any], settings: Settings) -> None:
    """The document's maxima are this service's settings, so clients see the real bounds."""
    for name, setting in SETTINGS.items():
        section, prop = BODY_FIELDS[name]
        schema = SPEC_SCHEMAS[section]
        field = schemas.get(schema, {}).get("properties", {}).get(prop)
        if field is None:
            continue
        for variant in field.get("anyOf", [field]):
            if "maximum" in variant:
                variant["maximum"] = getattr(settings, setting)


class BodyLimit:
    """413 beyond TBPTT_MAX_BODY_BYTES (TBPTT_MAX_MODEL_BYTES for model uploads), with and without a
    Content-Length, answered as JSON ``{"detail": ...}`` like every other error. (Starlette's own limit
    answers plain text, and replaces whatever the app answers to a request whose Content-Length is over it.)
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        model = scope["method"] == "PUT" and scope["path"].endswith("/model")  # ids hold no "/"
        setting = "max_model_bytes" if model else "max_body_bytes"
        limit = getattr(self.settings, setting)
        too_large = f"the body is larger than {limit} bytes (TBPTT_{setting.upper()})"
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # an HTTPException: FastAPI's body parsing lets it through as it is
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, receive_within_limit, send)


def check_rollout(states: list[StreamState], parts: list[Part], settings: Settings) -> None:
    """A stream with a horizon H rolls each observation's forecasts H - 1 steps forward: a request may roll
    at most TBPTT_MAX_BATCH steps in all (else a 422), so that its work stays that of a full batch."""
    check_rolled(rollout(states, parts), settings)


def rollout(states: list[StreamState], parts: list[Part]) -> int:
    """The steps that ``parts`` of a request, for ``states``, roll forecasts forward (``check_rollout``)."""
    return sum(len(part.observations) * (state.config.horizon - 1) for state, part in zip(states, parts))


def check_rolled(rolled: int, settings: Settings) -> None:
    """``check_rollout`` of a request that rolls ``rolled`` steps (a sharded front sums its shards')."""
    if rolled > settings.max_batch:
        raise Invalid(
            ("body",),
            f"this request would roll forecasts {rolled:,} steps forward (each observation of a stream with a "
            f"horizon H: H - 1), at most {settings.max_batch:,} per request (TBPTT_MAX_BATCH): send fewer "
            "observations per request",
        )
