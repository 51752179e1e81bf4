"""Which shard owns a stream: a stable hash of (tenant, stream) into a fixed number of key groups, and key
groups over shards (as Flink's key groups and Kafka's partitions).

The group count is chosen once, when a data directory is first served with shards, and recorded with the
shard count in ``data_dir/sharding.json``; a stream's group never changes, so which shard owns it depends
only on the shard count. The hash is BLAKE2b of the tenant and the stream id, not Python's ``hash`` (salted
per process: the front and a restarted shard must agree forever).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .datadir import DataDirUnusable

GROUPS = 128  # key groups of a new sharded data directory: the most shards it can ever have
PLACEMENT_FILE = "sharding.json"
REBALANCING_FILE = "rebalancing.json"  # there while tbptt rebalance moves streams (service/rebalance.py)
SHARDS_FOLDER = "shards"
SINGLE_PROCESS_STORE = "tbptt.sqlite3"  # service/store.py's file: a single-process server's data directory


class PlacementError(DataDirUnusable):
    """The data directory cannot be served with these shards; the message says why and what to do."""


@functools.lru_cache(maxsize=1 << 15)  # the front routes every observation: hashing was 4% of its time
def group_of(tenant: str, stream: str, groups: int) -> int:
    """The key group of a stream: stable across processes, machines and versions."""
    key = f"{len(tenant)}:{tenant}{stream}".encode()  # (the length keeps ("ab", "c") apart from ("a", "bc"))
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % groups


@dataclass(frozen=True, slots=True)
class Placement:
    groups: int
    shards: int

    def shard_of(self, tenant: str, stream: str) -> int:
        return group_of(tenant, stream, self.groups) % self.shards

    @staticmethod
    def folder(data_dir: Path, shard: int) -> Path:
        """Shard ``shard``'s own data directory (its store, its log, its checkpoints)."""
        return data_dir / SHARDS_FOLDER / str(shard)

    @classmethod
    def of(cls, data_dir: Path, shards: int) -> Placement:
        """The placement of ``data_dir`` served with ``shards`` shards: recorded on first use; refused if the
        folder holds a single-process store or was sharded otherwise."""
        if not 1 <= shards <= GROUPS:
            raise PlacementError(f"shards must be between 1 and {GROUPS}, got {shards}")
        check_settled(data_dir)
        placement = recorded(data_dir)
        if placement is not None:
            if placement.shards != shards:
                raise PlacementError(
                    f"{data_dir} holds {placement.shards} shards, not {shards}: serve it with --shards "
                    f"{placement.shards}, or move its streams first (tbptt rebalance --shards {shards})"
                )
            return placement
        if (data_dir / SINGLE_PROCESS_STORE).exists():
            raise PlacementError(
                f"{data_dir} holds a single-process server's streams: serve it without --shards, or move them "
                f"into shards first (tbptt rebalance --shards {shards})"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        placement = cls(GROUPS, shards)
        record(data_dir, placement)
        return placement


def recorded(data_dir: Path) -> Placement | None:
    """The placement ``data_dir`` records (None: it was never served with shards)."""
    path = data_dir / PLACEMENT_FILE
    if not path.exists():
        return None
    found = json.loads(path.read_text())
    return Placement(int(found["groups"]), int(found["shards"]))


def record(data_dir: Path, placement: Placement) -> None:
    write_json(data_dir / PLACEMENT_FILE, {"groups": placement.groups, "shards": placement.shards})


def write_json(path: Path, value: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value))
    temporary.replace(path)  # whole or absent after a crash


def check_unsharded(data_dir: Path) -> None:
    """A single-process server refuses a sharded data directory (its streams live in the shards' folders)."""
    placement = recorded(data_dir)
    if placement is not None:
        raise PlacementError(f"{data_dir} holds {placement.shards} shards: serve it with --shards {placement.shards}")


def check_settled(data_dir: Path) -> None:
    """No server starts while ``tbptt rebalance`` is moving the directory's streams (service/rebalance.py)."""
    marker = data_dir / REBALANCING_FILE
    if marker.exists():
        to = json.loads(marker.read_text())["to"]
        raise PlacementError(
            f"{data_dir}: a rebalance to {to} shards has not finished (was it stopped?): finish it first "
            f"(tbptt rebalance --shards {to})"
        )


def preflight(data_dir: Path, shards: int) -> Placement | None:
    """Before a server starts: its placement with ``shards`` (0: a single process, refused on a sharded
    directory)."""
    if shards == 0:
        check_settled(data_dir)
        check_unsharded(data_dir)
        return None
    return Placement.of(data_dir, shards)
