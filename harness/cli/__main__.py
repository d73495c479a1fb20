"""``python -m harness.cli``: the ``edgefarm`` command."""

from harness.cli import main

main()
