"""Sending observations at a pace, with a progress bar (tqdm) on stderr when it is a terminal."""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm


def bar(total: int, unit: str = "obs") -> tqdm:
    """Shown on a terminal, or always with TBPTT_PROGRESS=1."""
    shown = sys.stderr.isatty() or os.environ.get("TBPTT_PROGRESS") == "1"
    return tqdm(total=total, unit=unit, disable=not shown, file=sys.stderr, dynamic_ncols=True)


def pace(rate: float, sent: int, started: float) -> None:
    """Sleep until ``sent`` items at ``rate`` per second from ``started`` are due (no pacing at rate 0)."""
    if rate > 0:
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
