"""``python -m chain_scheduler.cli``: the same as the ``chainsched`` command."""

from chain_scheduler.cli import main

main()
