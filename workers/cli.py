"""``python -m workers worker|beat``: a worker host's entry point (``edgefarm worker`` execs it).

A worker registers the phones attached to this host (one ``device.<id>`` queue each), then
consumes those queues and, unless ``--no-compile``, the ``compile`` and ``tuning`` queues.
``--beat`` adds the scheduler that sends the reaper; a farm needs exactly one beat. A host that
compiles or runs beat also runs the reaper's worker (the ``maintenance`` queue), apart
from compiles.
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
from harness.farm.liveness import process_name
from harness.supervise import Child, Supervisor
from workers.liveness import PROCESS_NAME_ENV

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
    own worker with ``--concurrency`` processes, the reaper one process, beat its own. This
    process supervises them (harness.supervise): one that dies is restarted with backoff,
    alone; one that keeps dying is given up on and reported down; a signal stops them all.
    """
    url = database_url()
    ensure_schema(url)
    name = worker_name()
    groups = [(q, [q], 1) for q in register_devices(device or [], pool=pool, worker=name)]
    if compile:
        groups.insert(0, ("compile", ["compile"], concurrency))
        # Farm tunings search for hours: a process of their own, never in a compile's way.
        groups.insert(1, ("tuning", ["tuning"], 1))
    if compile or beat:
        # The reaper never waits behind a compile (see workers.celery_app).
        groups.append(("maintenance", ["maintenance"], 1))
    if not groups and not beat:
        _fail("nothing to consume: give --device, or drop --no-compile")
    celery = [sys.executable, "-m", "celery", "-A", "workers.celery_app"]
    children: list[Child] = []
    for label, queues, processes in groups:
        argv = [
            *celery,
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
        children.append(_child(label, argv))
        typer.echo(f"worker {label}.{name}: consuming {', '.join(queues)}")
    if beat:
        argv = [*celery, "beat", "--loglevel", loglevel.upper(), "--scheduler", BEAT_SCHEDULER]
        children.append(_child("beat", argv))
        typer.echo("beat: sends the reaper every EDGEFARM_REAP_INTERVAL_S")
    sys.stdout.flush()
    settings = get_settings()
    supervisor = Supervisor(
        children,
        restart_limit=settings.worker_restart_limit,
        restart_window_s=settings.worker_restart_window_s,
        backoff_max_s=settings.worker_restart_backoff_max_s,
        on_give_up=_report_down,
    )
    sys.exit(supervisor.run())


BEAT_SCHEDULER = "workers.beat:Scheduler"


def _child(label: str, argv: list[str]) -> Child:
    """A supervised farm process that reports itself as ``LABEL@HOST``."""
    env = {**os.environ, PROCESS_NAME_ENV: process_name(label)}
    return Child(name=env[PROCESS_NAME_ENV], argv=argv, env=env, cwd=ROOT)


def _report_down(child: Child, reason: str) -> None:
    """The supervisor gave up on ``child``: say so where health looks (its workers row)."""
    from harness.db import WorkerStatus
    from harness.farm.liveness import mark

    engine = make_engine()
    try:
        with make_session_factory(engine)() as session:
            mark(session, child.name, WorkerStatus.down, reason)
            session.commit()
    except Exception:  # the database may be what is down; the log still says it
        log.exception("could not record that %s is down", child.name)
    finally:
        engine.dispose()


@cli.command("beat")
def beat_command(
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run beat alone: it sends the reaper every EDGEFARM_REAP_INTERVAL_S."""
    from workers.celery_app import app

    app.start(["beat", "--loglevel", loglevel.upper(), "--scheduler", BEAT_SCHEDULER])


def main() -> None:
    cli()
