"""The farm's Alembic migrations, found wherever this package is: the one place harness code
migrates a database or asks whether it is migrated (``edgefarm up``, ``edgefarm worker``), and
Alembic's command line for operators of an installed farm (``python -m harness.db.migrate``,
which docker-compose's ``migrate`` service runs).

The migrations are the repository's top-level ``migrations/``. The wheel ships the same files as
``harness/db/migrations`` (``setup.py`` maps the one onto the other at build time), so an
installed package finds them next to this module and a checkout finds them at the top of the
repository. Neither needs ``alembic.ini`` nor a working directory; ``alembic.ini`` stays for
operators who run ``alembic upgrade head`` in a checkout.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from harness.db.session import database_url, make_engine
from harness.errors import HarnessBug, InfrastructureError, one_line

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
# Installed: the wheel's copy next to this module. A checkout: the repository's migrations/.
_LOCATIONS = (_HERE / "migrations", _HERE.parents[1] / "migrations")


def script_location() -> Path:
    """The directory holding ``env.py`` and ``versions/`` of this edgefarm."""
    for location in _LOCATIONS:
        if (location / "env.py").is_file() and (location / "versions").is_dir():
            return location
    raise HarnessBug(
        f"edgefarm's database migrations are missing (looked in {_LOCATIONS[0]} and "
        f"{_LOCATIONS[1]}): this installation is incomplete, reinstall edgefarm"
    )


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` built in code: no ``alembic.ini``, no working directory."""
    config = Config()
    # Config values are interpolated: a '%' in the path must be doubled.
    config.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url  # read by migrations/env.py
    config.attributes["configure_logger"] = False  # logging belongs to the entry point
    return config


def _reason(exc: BaseException) -> str:
    return one_line(str(getattr(exc, "orig", None) or exc))


def upgrade(url: str) -> None:
    """``alembic upgrade head`` on ``url``."""
    try:
        command.upgrade(alembic_config(url), "head")
    except (SQLAlchemyError, CommandError, OSError) as exc:
        # CommandError: e.g. the database is at a revision this edgefarm does not know (newer).
        raise InfrastructureError(f"database migration failed: {_reason(exc)}") from exc


def current_and_head(url: str) -> tuple[set[str], set[str]]:
    """The revisions the database at ``url`` is at, and the heads of these migrations; the
    database is migrated when the two are equal."""
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    try:
        engine = make_engine(url)
    except (SQLAlchemyError, ImportError) as exc:  # a bad URL, a driver not installed
        raise InfrastructureError(f"cannot reach the database: {_reason(exc)}") from exc
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except (SQLAlchemyError, OSError) as exc:
        raise InfrastructureError(f"cannot reach the database: {_reason(exc)}") from exc
    finally:
        engine.dispose()
    return current, heads


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.db.migrate [COMMAND ...]``: Alembic's command line (``upgrade head``,
    ``current``, ``downgrade -1``, ...) on these migrations and the configured database
    (EDGEFARM_DATABASE_URL, else the embedded SQLite; ``-x url=...`` overrides both). Without a
    command: ``upgrade head``. docker-compose's ``migrate`` service runs this."""
    from alembic.config import CommandLine

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    cli = CommandLine(prog="python -m harness.db.migrate")
    options = cli.parser.parse_args(args or ["upgrade", "head"])
    if not hasattr(options, "cmd"):
        cli.parser.error("give an Alembic command, e.g. upgrade head")
    config = alembic_config(database_url())
    config.cmd_opts = options
    cli.run_cmd(config, options)


if __name__ == "__main__":
    main()
