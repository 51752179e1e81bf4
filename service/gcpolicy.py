"""How a serving process asks Python's cycle collector to stay out of the way.

Measured on bench.service c) (1,000 streams): with CPython's defaults the collector took a fifth of the
process's time, nearly all of it in full collections, each a pass of ~40 ms with the GIL held over every
object the streams keep (tensors, logs, results). Full collections are the cost, so they are made rare.

The sharded server's processes (fronts and shards) also collect the young generation less often: every
20,000 net allocations, not 700. A request's objects there (a front's parsed body and parts, a shard's
decoded request) live for the request, so at 700 most were scanned young, moved to the middle generation
and scanned there again; the middle generation took half the collector's time in a sharded front.
Measured on c) with 2 shards, alternated nine times: 41,900-47,000 observations/s against 41,100-45,200
(medians 44,900 and 42,800), the front's CPU per observation 7.8-8.4 us against 8.7-9.2; its
`/predictions` of 64 results of 1,024 values unchanged (32.7-34.1 req/s against 33.0-34.7). The single
process keeps 700: there c) and 1-observation posts did not change (alternated three times each), and
`/predictions` of 64 results of 1,024 values fell 8% at 5,000 and at 20,000 (30.1-32.0 req/s against
33.5-35.2, alternated six times). A young collection at 20,000 takes 0.3-1.3 ms (0.01-0.05 at 700).
"""

from __future__ import annotations

import gc

YOUNG = 700  # CPython's default: a young collection every 700 net allocations
SHARDED_YOUNG = 20_000  # in a sharded server's fronts and shards
MIDDLE = 10  # CPython's default
FULL = 1000  # a full collection after 1,000 middle ones (CPython: 10)


def park_long_lived(sharded: bool = False) -> None:
    """Park everything alive now (torch, FastAPI, pydantic, Ray: ~200,000 objects that never die) out of
    the collector's sight, and make full collections rare (and, ``sharded``, young ones too)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(SHARDED_YOUNG if sharded else YOUNG, MIDDLE, FULL)
