"""Test-only fault injection, off unless ``TBPTT_FAULTS`` is set (comma-separated):

- ``die_in_checkpoint=N``: the process dies (SIGKILL) in the middle of its N-th checkpoint write, after the
  row is written and before the commit;
- ``die_in_part=N``: likewise in the N-th part of a large checkpoint (service/checkpoint_writer.py);
- ``die_in_results=N``: likewise in the N-th transaction of runs of results a large checkpoint writes first;
- ``die_in_update=N``: the process dies in the middle of the engine's N-th TBPTT update, after its
  gradient and before its optimizer step;
- ``disk_full_while=PATH``: every store write fails as on a full disk while the file PATH exists.

The durability tests use these to land crashes and write failures exactly where they hurt most.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path


class Faults:
    def __init__(self, spec: str | None) -> None:
        options = dict(item.split("=", 1) for item in (spec or "").split(",") if item)
        self._die = {
            point: int(options[f"die_in_{point}"])
            for point in ("checkpoint", "part", "results", "update")
            if f"die_in_{point}" in options
        }
        self._seen = dict.fromkeys(self._die, 0)
        self._counting = threading.Lock()  # the engine thread and the checkpoint writer both reach points
        self._full = Path(options["disk_full_while"]) if "disk_full_while" in options else None

    @classmethod
    def from_environment(cls) -> Faults:
        return cls(os.environ.get("TBPTT_FAULTS"))

    def reached(self, point: str) -> None:
        """Called at the points named above; dies when told to."""
        if point not in self._die:
            return
        with self._counting:
            self._seen[point] += 1
            if self._seen[point] == self._die[point]:
                os.kill(os.getpid(), signal.SIGKILL)

    def disk_full(self) -> bool:
        return self._full is not None and self._full.exists()

    def install_in_engine(self) -> None:
        """Mark the middle of every TBPTT update (only when asked: the core knows nothing of this)."""
        if "update" not in self._die:
            return
        from tbptt.models import optim

        apply = optim.apply

        def apply_with_fault(*args, **kwargs):
            self.reached("update")
            return apply(*args, **kwargs)

        optim.apply = apply_with_fault
