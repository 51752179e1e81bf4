"""``python -m tbptt.service.cli``: the same as the ``tbptt`` command."""

from .main import main

main()
