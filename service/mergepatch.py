"""JSON merge patches (RFC 7396), on their own: what the service merges configs with (service/patching.py),
and what ``tbptt replay --config`` merges over a file's columns without loading the service."""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: an object patches member by member (null removes one: here, back to its default); anything
    else replaces the target whole."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
