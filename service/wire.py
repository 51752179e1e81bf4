"""What the front and a shard send each other: observation requests and their results as JSON bytes (orjson).

The link between them pickles each message (service/link.py), and the bytes inside cost it a copy. Pickling
a request's objects instead costs twice as much (encoded and read back, 500 one-observation parts: 4.05 us
per observation against 2.06 with these bytes inside); orjson writes and reads them in C, a float as the
shortest text that reads back as the same double (so exactness holds), and equal bytes are an equal request
(a shard keeps a checked request decoded by its bytes). What refused a request (an exception, rare) travels
beside the bytes, pickled by the link.
"""

from __future__ import annotations

from typing import Any

import orjson

from .ingest import Incoming, Part
from .outboxes import KNOWN, Applied
from .registry import Usage
from .shard import Request

# A front's job for a shard: its id there, its tenant (None: anyone's), and an observation request (bytes, as
# ``request_bytes`` encodes it) or a call (name, arguments, the quota usage of the other shards)
Sent = tuple[int, str | None, bytes | tuple[str, tuple, Usage | None]]


def request_bytes(request: Request) -> bytes:
    """One observation request, encoded once: the same bytes go to the shard's check and to its apply."""
    tenant, parts = request
    return orjson.dumps([tenant, [[p.stream, list(p.loc), p.indexed, p.incarnation, [
        [o.x, o.y, o.seq, o.learn, o.ts] for o in p.observations
    ]] for p in parts]])  # fmt: skip


def request_of(data: bytes) -> Request:
    tenant, parts = orjson.loads(data)
    return (tenant, [
        Part(stream, [Incoming(x, y, seq, learn, ts) for x, y, seq, learn, ts in observations], tuple(loc),
             indexed, incarnation)
        for stream, loc, indexed, incarnation, observations in parts
    ])  # fmt: skip


# The answers to a front's jobs: their ids; a request's results as JSON (null where beside); beside, by
# position, what refused a request and each call's (value, error); then the front's outbox: watchers'
# batches, the tenants with new alerts, and what the front is told (service/outboxes.py); and whether the
# shard has work left (any front's: every front calls again at once while it has, so that it goes on)
Answers = tuple[list[int], bytes, dict[int, Any], bytes, list[str], str, bool]


def answers_bytes(
    answered: list[tuple[int, Any, bool]],
    applied: list[Applied],
    alerted: list[str],
    told: str = KNOWN,
    busy: bool = False,
) -> Answers:
    """``answered``: (job id, its answer, whether a call's)."""
    beside = {k: o for k, (_, o, call) in enumerate(answered) if call or isinstance(o, BaseException)}
    results = orjson.dumps([None if k in beside else o for k, (_, o, _) in enumerate(answered)])
    batches = orjson.dumps([[[tenant, stream, batch] for (tenant, stream), batch in b.items()] for b in applied])
    return [job for job, _, _ in answered], results, beside, batches, alerted, told, busy


def answers_of(answers: Answers) -> tuple[list[tuple[int, Any]], list[Applied], list[str], str, bool]:
    """Per job answered, (its id, its answer); the outbox; whether the shard has work left."""
    jobs, results, beside, batches, alerted, told, busy = answers
    outcomes: list[Any] = orjson.loads(results)
    for k, outcome in beside.items():
        outcomes[k] = outcome
    applied = [{(tenant, stream): batch for tenant, stream, batch in b} for b in orjson.loads(batches)]
    return list(zip(jobs, outcomes)), applied, alerted, told, busy
