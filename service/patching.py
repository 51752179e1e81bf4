"""Stream configs as JSON merge patches (RFC 7396): changing a live stream (a patch of its config, as
``GET /v1/streams/{id}`` shows it), and a tenant's template (a stream's settings that streams are created
with: an observation for an unknown stream, or each of a bulk create merged over it).

What a patch may change is what the stream's state does not depend on (``tbptt.models.config.CHANGEABLE``:
the optimizer's settings, clipping, the loss, anomaly and interval settings, the timestamps' order) and its
labels; anything else (sizes, cell, schedule, ...) is a 409 that names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tbptt.models import InvalidConfig
from tbptt.models import StreamConfig as CoreConfig
from tbptt.models.config import CHANGEABLE

from . import limits
from .errors import Conflict, Invalid
from .mergepatch import merge_patch
from .schemas import BODY_FIELDS, StreamCreate


def patched(config: CoreConfig, labels: dict[str, str], patch: dict[str, Any]) -> tuple[CoreConfig, dict[str, str]]:
    """The config and labels after ``patch``: validated as a PUT body is (a 422 naming the field), and
    refused (409) where it changes what a live stream cannot change."""
    body = merge_patch(StreamCreate.from_core(config, labels).model_dump(mode="json"), patch)
    try:
        spec = StreamCreate.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        raise Invalid.listing([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    try:
        new = spec.to_core()
    except InvalidConfig as exc:
        raise limits.invalid_config(exc) from exc
    fixed = [name for name in config.differing(new) if name not in CHANGEABLE]
    if fixed:
        where = BODY_FIELDS.get(fixed[0], (fixed[0],))
        raise Conflict(
            ["body", *where],
            f"{', '.join(fixed)} cannot change on a live stream (they define its network or the state it keeps): "
            f"create a new stream for that. A patch may change {', '.join(CHANGEABLE)} and labels",
            "unchangeable",
        )
    return new, spec.labels


@dataclass(frozen=True)
class Template:
    """A tenant's default stream settings: a complete PUT body (``body``, JSON) and what it creates."""

    body: str
    config: CoreConfig
    labels: dict[str, str]

    @classmethod
    def of(cls, body: str) -> Template:
        spec = StreamCreate.model_validate_json(body)
        return cls(body, spec.to_core(), spec.labels)

    @classmethod
    def from_spec(cls, spec: StreamCreate) -> Template:
        try:
            config = spec.to_core()
        except InvalidConfig as exc:
            raise limits.invalid_config(exc) from exc
        return cls(spec.model_dump_json(), config, spec.labels)


def completed(template: Template | None, item: dict[str, Any], loc: tuple[str | int, ...]) -> StreamCreate:
    """A stream's PUT body from ``item`` merged over the template (without one: ``item`` itself), validated
    (a 422 whose loc starts with ``loc``)."""
    body = item if template is None else merge_patch(json.loads(template.body), item)
    try:
        return StreamCreate.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        raise Invalid.listing([{**e, "loc": (*loc, *e["loc"])} for e in exc.errors()]) from None
