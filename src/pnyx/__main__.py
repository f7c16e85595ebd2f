"""``python -m pnyx``: the same command line as the ``pnyx`` script."""

from pnyx.cli.main import main

main()
