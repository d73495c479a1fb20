"""``python -m workers worker|beat``: a worker host's entry point (``edgefarm worker`` execs it).

A worker registers the phones attached to this host (one ``device.<id>`` queue each), then
consumes those queues and, unless ``--no-compile``, the ``compile`` queue. ``--beat`` embeds
the scheduler that sends the reaper; a farm needs exactly one beat.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from harness.config import get_settings
from harness.db import database_url, make_engine, make_session_factory
from harness.errors import EdgefarmError

log = logging.getLogger("workers.cli")

ROOT = Path(__file__).resolve().parents[1]

cli = typer.Typer(
    name="workers", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def ensure_schema(url: str) -> None:
    """The embedded SQLite database is migrated here (``alembic upgrade head``); any other
    database must have been migrated by its operator: say so if it was not. The migrations are
    the ones this package carries, installed or in a checkout (``harness.db.migrate``)."""
    from harness.db.migrate import current_and_head, upgrade

    try:
        if url.startswith("sqlite"):
            upgrade(url)
            return
        current, heads = current_and_head(url)
    except EdgefarmError as exc:  # unreachable database, bad URL, migrations missing
        _fail(exc.message)
        return
    if current != heads:
        _fail(
            f"the database is at revision {sorted(current) or 'none'}, not {sorted(heads)}: "
            "run `python -m harness.db.migrate` (or `alembic upgrade head` in a checkout) first"
        )


def worker_name() -> str:
    return get_settings().worker_name or f"edgefarm-{os.getpid()}@{socket.gethostname()}"


def register_devices(addresses: list[str], *, pool: str, worker: str) -> list[str]:
    """Register each device (printing its id and queue); the queues to consume. A device
    that cannot be opened is marked bad and its queue still consumed if it is known, so that
    its runs end with a clear message instead of waiting forever."""
    from harness.farm.registry import mark_unreachable, register_device

    engine = make_engine()
    factory = make_session_factory(engine)
    queues: list[str] = []
    try:
        for address in addresses:
            with factory() as session:
                try:
                    device = register_device(address, session=session, pool=pool, worker=worker)
                except EdgefarmError as exc:
                    session.rollback()
                    known = mark_unreachable(address, exc.message, session=session)
                    session.commit()
                    typer.echo(f"warning: {address}: {exc.message}", err=True)
                    if known is not None:
                        queues.append(known.queue)
                    continue
                session.commit()
                typer.echo(
                    f"device {device.id}: {address} {device.model_name} ({device.target}) "
                    f"-> queue {device.queue}"
                )
                queues.append(device.queue)
    finally:
        engine.dispose()  # the pool's processes open their own connections
    return queues


@cli.command()
def worker(
    device: Annotated[
        list[str] | None,
        typer.Option("--device", "-d", help="local, tcp:HOST:PORT, usb:SERIAL; repeatable."),
    ] = None,
    pool: Annotated[str, typer.Option(help="The device pool these phones join.")] = "default",
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile", help="Also consume the compile queue.")
    ] = True,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=1, help="Compile processes (builds at once)."),
    ] = 1,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    beat: Annotated[bool, typer.Option(help="Also run beat (the reaper's schedule).")] = False,
) -> None:
    """Register this host's devices and consume their queues (and compile).

    Each phone's queue gets a Celery worker of its own with one process, so a phone is never
    offered two runs at once and never waits behind another phone's run; compiles get their
    own worker with ``--concurrency`` processes. This process supervises them: a signal is
    passed on to all, and when one dies the others are stopped too.
    """
    url = database_url()
    ensure_schema(url)
    name = worker_name()
    groups = [(q, [q], 1) for q in register_devices(device or [], pool=pool, worker=name)]
    if compile:
        groups.insert(0, ("compile", ["compile"], concurrency))
    if not groups:
        _fail("nothing to consume: give --device, or drop --no-compile")
    commands = []
    for index, (label, queues, processes) in enumerate(groups):
        argv = [
            "worker",
            "--queues",
            ",".join(queues),
            "--prefetch-multiplier",
            "1",
            "--concurrency",
            str(processes),
            "--loglevel",
            loglevel.upper(),
            "--hostname",
            f"{label}.{name}",
            "--pool",
            "prefork",
        ]
        if beat and index == 0:
            argv += ["--beat", "--scheduler", "celery.beat:Scheduler"]
        commands.append(argv)
        typer.echo(f"worker {label}.{name}: consuming {', '.join(queues)}")
    sys.stdout.flush()
    if len(commands) == 1:
        from workers.celery_app import app

        app.worker_main(commands[0])
        return
    sys.exit(
        _supervise(
            [
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", *argv]
                for argv in commands
            ]
        )
    )


def _supervise(commands: list[list[str]]) -> int:
    """Run the commands as children in this process group; pass SIGTERM/SIGINT on; when one
    exits, stop the rest. Returns the first exit status (0 after a requested stop)."""
    import signal
    import subprocess
    import time

    children = [subprocess.Popen(cmd, cwd=ROOT) for cmd in commands]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while any(child.poll() is None for child in children):
        ended = [c for c in children if c.poll() is not None]
        if ended and not stopping:
            status = ended[0].returncode or 1
            log.error("a worker exited (%s); stopping the others", ended[0].returncode)
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return 0 if stopping and status == 0 else status


@cli.command("beat")
def beat_command(
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run beat alone: it sends the reaper every EDGEFARM_REAP_INTERVAL_S."""
    from workers.celery_app import app

    app.start(["beat", "--loglevel", loglevel.upper(), "--scheduler", "celery.beat:Scheduler"])


def main() -> None:
    cli()
