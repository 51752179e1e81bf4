"""``tbptt rebalance``: a data directory's streams moved to another shard count, offline.

    tbptt rebalance --data-dir ./data --shards 4    (from a single process's directory, or from N shards)

A stream's key group never changes (service/keygroups.py); its shard is its group modulo the shard count.
Every shard (and a single process's store) is opened as the server opens it, which recovers every stream
exactly from its log; each stream whose shard changes is handed over whole: its row, its exact state
written as the new shard's checkpoint, and its alerts (their ids kept, so a feed's ``since`` still holds),
then deleted where it was. Templates live with shard 0 (a single process's go there).

Nothing is lost if it stops halfway (kill -9 included): ``rebalancing.json`` says where it was going, and
no server starts while it is there; run the same command again and it finishes. A stream found in both
places (stopped between its adoption and its deletion) keeps the adopted copy if it is complete, and is
adopted again otherwise. The shard count is recorded, and the folders no shard uses are removed, last.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import keygroups
from .keygroups import GROUPS, REBALANCING_FILE, SINGLE_PROCESS_STORE, Placement, PlacementError, group_of
from .patching import Template
from .settings import Settings
from .shard import Shard
from .telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moved:
    streams: int  # handed over to another shard
    stayed: int
    shards_before: int  # 0: a single process


def rebalance(data_dir: Path, shards: int, settings: Settings, say: Callable[[str], None] = log.info) -> Moved:
    """Move the streams of ``data_dir`` to ``shards`` shards (see the module's docstring)."""
    if not 1 <= shards <= GROUPS:
        raise PlacementError(f"shards must be between 1 and {GROUPS}, got {shards}")
    groups, before = _where(data_dir, shards)
    marker = data_dir / REBALANCING_FILE
    if not marker.exists():
        keygroups.write_json(marker, {"groups": groups, "from": before, "to": shards})
    sources = [None] if before == 0 else list(range(before))
    opened: dict[int | None, Shard] = {}

    def shard(k: int | None) -> Shard:
        if k not in opened:
            folder = _folder(data_dir, k)
            opened[k] = Shard(settings.model_copy(update={"data_dir": folder, "shards": 0}), Telemetry(None), k)
            opened[k].open()
        return opened[k]

    moved = stayed = 0
    try:
        present = [k for k in sources if _folder(data_dir, k).joinpath(SINGLE_PROCESS_STORE).exists()]
        held = {k: [(s.tenant, s.id) for s in shard(k).registry] for k in present}  # (before any moves in)
        for k, streams in held.items():
            for tenant, stream in streams:
                to = group_of(tenant, stream, groups) % shards
                if to == k:
                    stayed += 1
                    continue
                _hand_over(shard(k), shard(to), tenant, stream)
                moved += 1
            if k is None:  # a single process's templates: with shard 0 from now on
                for tenant, template in shard(k).templates.items():
                    shard(0).set_template(tenant, Template.of(template.body))
        for k in range(shards):
            shard(k)  # every shard's folder exists, the new ones empty
    finally:
        for opened_shard in opened.values():
            opened_shard.close(failed=False)
    _remove_unused(data_dir, before, shards)
    keygroups.record(data_dir, Placement(groups, shards))
    marker.unlink()
    say(f"{data_dir}: {moved} streams moved, {stayed} stayed; {before or 'a single process'} -> {shards} shards")
    return Moved(moved, stayed, before)


def _where(data_dir: Path, shards: int) -> tuple[int, int]:
    """The directory's key groups and shard count (0: a single process's), or where a rebalance that
    stopped was going from."""
    marker = data_dir / REBALANCING_FILE
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded["to"] != shards:
            keygroups.check_settled(data_dir)  # (refused: finish that one first)
        return int(recorded["groups"]), int(recorded["from"])
    placement = keygroups.recorded(data_dir)
    if placement is not None:
        return placement.groups, placement.shards
    if (data_dir / SINGLE_PROCESS_STORE).exists():
        return GROUPS, 0
    raise PlacementError(f"{data_dir} holds no streams to move (no store and no shards there)")


def _hand_over(source: Shard, target: Shard, tenant: str, stream: str) -> None:
    """One stream from ``source`` to ``target``: adopted there (durably) before it is deleted here."""
    handover = source.handover(tenant, stream)
    found = target.registry.find(tenant, stream)
    if found is not None and not target.holds(handover):  # a copy left half-adopted by a run that stopped
        target.delete(tenant, stream)
        found = None
    if found is None:
        target.adopt(handover)
    source.delete(tenant, stream)


def _folder(data_dir: Path, shard: int | None) -> Path:
    """Where shard ``shard``'s store is (None: a single process's, the directory itself)."""
    return data_dir if shard is None else Placement.folder(data_dir, shard)


def _remove_unused(data_dir: Path, before: int, shards: int) -> None:
    """The stores no shard uses any more (every stream in them was handed over)."""
    if before == 0:
        for name in (SINGLE_PROCESS_STORE, f"{SINGLE_PROCESS_STORE}-wal", f"{SINGLE_PROCESS_STORE}-shm"):
            (data_dir / name).unlink(missing_ok=True)
    for k in range(shards, before):
        shutil.rmtree(_folder(data_dir, k), ignore_errors=True)
