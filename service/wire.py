"""What the front and a shard send each other: observation requests and their results as JSON bytes (orjson).

Ray would pickle them with cloudpickle, whose pure-Python pickler spent a quarter of the front's time on
batches of thousands of small objects (py-spy, bench.service c) with 2 shards); orjson writes and reads them
in C, a float as the shortest text that reads back as the same double (so exactness holds), and nothing
here unpickles. What refused a request (an exception, rare) travels beside the bytes, as Ray sends it.
"""

from __future__ import annotations

import orjson

from .ingest import Incoming, Part
from .outboxes import KNOWN, Applied
from .shard import Outcome, Request


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


# results, refusals by request, the front's outbox: watchers' batches, the tenants with new alerts, and what
# the front is told (service/outboxes.py)
Answers = tuple[bytes, dict[int, Exception], bytes, list[str], str]


def answers_bytes(outcomes: list[Outcome], applied: list[Applied], alerted: list[str], told: str = KNOWN) -> Answers:
    refused = {k: o for k, o in enumerate(outcomes) if isinstance(o, Exception)}
    results = orjson.dumps([None if isinstance(o, Exception) else o for o in outcomes])
    batches = orjson.dumps([[[tenant, stream, batch] for (tenant, stream), batch in b.items()] for b in applied])
    return results, refused, batches, alerted, told


def answers_of(answers: Answers) -> tuple[list[Outcome], list[Applied], list[str], str]:
    results, refused, batches, alerted, told = answers
    outcomes: list[Outcome] = orjson.loads(results)
    for k, error in refused.items():
        outcomes[k] = error
    applied = [{(tenant, stream): batch for tenant, stream, batch in b} for b in orjson.loads(batches)]
    return outcomes, applied, alerted, told
