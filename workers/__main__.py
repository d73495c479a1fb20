"""``python -m workers worker ...`` (see :mod:`workers.cli`)."""

from workers.cli import main

main()
