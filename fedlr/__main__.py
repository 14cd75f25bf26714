"""``python -m fedlr``: the same as the ``fedlr`` command."""

from fedlr.cli import main

main()
