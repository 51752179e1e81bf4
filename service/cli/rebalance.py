"""``tbptt rebalance``: a data directory's streams moved to another shard count (service/rebalance.py)."""

from __future__ import annotations

import argparse
import logging

from ..datadir import preflight
from ..rebalance import rebalance
from ..settings import Settings


def run(args: argparse.Namespace) -> None:
    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir is not None else {}))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    preflight(settings.data_dir)  # no server may hold it (each shard's folder is held while it is moved)
    rebalance(settings.data_dir, args.shards, settings, say=print)
