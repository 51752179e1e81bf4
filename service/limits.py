"""Limits that depend on settings: checked where the schema cannot, and shown in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from models import StreamConfig as CoreConfig

from .errors import Invalid
from .settings import Settings

# (schema, property, setting): the document's maximum is the setting, so clients see the real bound.
BOUNDS = (
    ("ModelSpec", "input_size", "max_input_size"),
    ("ModelSpec", "output_size", "max_output_size"),
    ("ModelSpec", "hidden_size", "max_hidden_size"),
    ("ModelSpec", "num_layers", "max_num_layers"),
    ("TBPTTSpec", "k1", "max_k2"),
    ("TBPTTSpec", "k2", "max_k2"),
)
FIELDS = {  # config field -> (location in the body, setting)
    "input_size": (("body", "model", "input_size"), "max_input_size"),
    "output_size": (("body", "model", "output_size"), "max_output_size"),
    "hidden_size": (("body", "model", "hidden_size"), "max_hidden_size"),
    "num_layers": (("body", "model", "num_layers"), "max_num_layers"),
    "k1": (("body", "tbptt", "k1"), "max_k2"),
    "k2": (("body", "tbptt", "k2"), "max_k2"),
}


def check_model(config: CoreConfig, settings: Settings) -> None:
    """A 422 naming the first field beyond its configured limit."""
    for field, (loc, setting) in FIELDS.items():
        limit = getattr(settings, setting)
        if getattr(config, field) > limit:
            raise Invalid(loc, f"must be at most {limit} (TBPTT_{setting.upper()}), got {getattr(config, field)}")


def check_batch(count: int, settings: Settings, loc: tuple[str | int, ...] = ("body", "observations")) -> None:
    if count > settings.max_batch:
        raise Invalid(loc, f"at most {settings.max_batch} observations per request (TBPTT_MAX_BATCH), got {count}")


def document(schemas: dict[str, Any], settings: Settings) -> None:
    for schema, prop, setting in BOUNDS:
        field = schemas.get(schema, {}).get("properties", {}).get(prop)
        if field is None:
            continue
        for variant in field.get("anyOf", [field]):
            if "maximum" in variant:
                variant["maximum"] = getattr(settings, setting)
