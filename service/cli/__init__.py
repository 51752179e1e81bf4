"""The ``tbptt`` command: run the service, feed it, look at what it learned.

    tbptt serve [--host 127.0.0.1] [--port 8000] [--data-dir ./data]
    tbptt replay FILE.csv --stream ID [--x COLS] [--y COLS] [--rate R] [--websocket] [--plot FILE.png]
    tbptt streams [list | show ID | delete ID]
    tbptt export ID FILE.safetensors          tbptt import ID FILE.safetensors
    tbptt simulate [--streams N] [--rate R] [--seconds S] [--csv FILE]

The client commands talk to ``--url`` (default ``$TBPTT_URL`` or http://127.0.0.1:8000) with ``--api-key``
(default ``$TBPTT_API_KEY``). One module per command; ``main`` turns ordinary failures into one line on
stderr and a non-zero exit.
"""

from .main import main

__all__ = ["main"]
