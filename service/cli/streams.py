"""``tbptt streams``, ``tbptt export`` and ``tbptt import``."""

from __future__ import annotations

import argparse
import json

from ..client import Client
from .main import UsageError


def run(args: argparse.Namespace) -> None:
    with Client(args.url, args.api_key) as tbptt:
        if args.action == "list":
            for s in tbptt.streams():
                c = s["config"]
                print(f"{s['id']:<30} {c['model']['cell']:<5} in {c['model']['input_size']:<4} "
                      f"steps {s['steps']:<10} updates {s['updates']}")  # fmt: skip
            return
        if not args.stream:
            raise UsageError(f"tbptt streams {args.action} needs a stream id")
        if args.action == "show":
            print(json.dumps({"info": tbptt.info(args.stream), "metrics": tbptt.metrics(args.stream)}, indent=2))
        else:
            tbptt.delete(args.stream)
            print(f"deleted {args.stream}")


def export(args: argparse.Namespace) -> None:
    with Client(args.url, args.api_key) as tbptt:
        args.file.write_bytes(tbptt.export_model(args.stream))
    print(f"wrote {args.file}")


def load(args: argparse.Namespace) -> None:
    data = args.file.read_bytes()  # a missing file fails here, before any request
    with Client(args.url, args.api_key) as tbptt:
        info = tbptt.import_model(args.stream, data)
    print(f"loaded {args.file} into {info['id']}")
