"""Every error a shard answers with crosses a process boundary (pickle) as it is: same class, message,
status and detail (a shard in another process refuses what the single process refuses)."""

from __future__ import annotations

import pickle

import pytest

from tbptt.models import errors as core
from tbptt.service import errors

CASES = [
    errors.ServiceError("internal error"),
    errors.StreamConflict("pump-7", "labels"),
    errors.StreamConflict("pump-7"),
    errors.StreamReplaced("pump-7"),
    errors.LimitReached("at most 3 streams"),
    errors.Invalid(("body", "x", 1), "null is not a number", "float_type"),
    errors.Invalid.listing([{"loc": ("body", "y"), "msg": "a", "type": "t"}, {"loc": ("body", "x"), "msg": "b"}]),
    errors.Conflict(("body", "observations", 0, "seq"), "seq 4 was applied with other values"),
    errors.StorageFull("disk full"),
    errors.Unavailable("the service is recovering", retry_after=1),
    errors.Unavailable("the engine failed"),
    core.InvalidConfig("hidden_size must be >= 1, got 0", "hidden_size"),
    core.InvalidState("weights: shape"),
    core.InvalidObservation(3, "x", "expected 2 values, got 1"),
    core.StreamNotFound("pump-7"),
    core.StreamExists("pump-7"),
]


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_an_error_is_the_same_after_crossing_a_process_boundary(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)
    if isinstance(error, errors.ServiceError | core.CoreError):
        assert errors.status_and_detail(copy) == errors.status_and_detail(error)
    if isinstance(error, errors.Unavailable):
        assert copy.headers() == error.headers()
