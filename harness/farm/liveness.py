"""Which farm processes are alive: Celery workers (and the queues they consume) and beat.

Every worker and beat writes a heartbeat into its ``workers`` row every few seconds
(``workers/liveness.py``); a process is *alive* while its heartbeat is younger than
``lease_timeout_s`` — the same horizon after which a silent run or lease is reaped, so the
farm has one notion of "dead". Rows outlive their processes, which is how health can say that
phone 3 lost its worker two minutes ago, and the supervisor marks a worker it gave up on
``down`` with its reason.

From this the farm derives what the API's ``/healthz``, ``edgefarm status``, device selection
and the reaper need: which device queues have a live consumer, when beat last ticked, and which
queues have runs waiting that nobody will take ("starved"). Functions here never commit.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.config import get_settings
from harness.db import Device, Run, RunStatus, Worker, WorkerKind, WorkerStatus, utcnow

log = logging.getLogger(__name__)

COMPILE_QUEUE = "compile"

# Rows of processes dead for longer than this are left out of reports (they stay in the table).
FORGET_AFTER = timedelta(days=1)


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def dead_after_s() -> float:
    """A heartbeat older than this means the process is dead (``lease_timeout_s``)."""
    return get_settings().lease_timeout_s


def process_name(label: str) -> str:
    """The row name of a farm process: ``LABEL@HOST`` (``device.3@lab-1``, ``beat@lab-1``),
    the same across restarts, so that a restarted worker takes over its own row."""
    return f"{label}@{socket.gethostname()}"


def heartbeat(
    session: Session,
    *,
    name: str,
    kind: WorkerKind,
    queues: list[str] | None = None,
    pid: int | None = None,
    now: datetime | None = None,
) -> Worker:
    """Record that the process ``name`` is alive now (creating its row). A new pid means the
    process was restarted: its ``started_at`` starts again."""
    now = now or utcnow()
    row = session.scalar(select(Worker).where(Worker.name == name))
    if row is None:
        row = Worker(name=name, kind=kind, started_at=now)
        session.add(row)
    if row.pid != pid or row.status != WorkerStatus.up:
        row.started_at = now
    row.kind = kind
    row.host = socket.gethostname()
    row.pid = pid
    row.queues = sorted(queues or [])
    row.status = WorkerStatus.up
    row.reason = None
    row.heartbeat_at = now
    session.flush()
    return row


def mark(session: Session, name: str, status: WorkerStatus, reason: str | None = None) -> None:
    """Record that the process ``name`` stopped (on purpose) or is down (given up on)."""
    row = session.scalar(select(Worker).where(Worker.name == name))
    if row is None:
        return
    row.status = status
    row.reason = reason
    session.flush()


class ProcessJson(TypedDict):
    """A farm process as /healthz lists it."""

    name: str
    kind: str
    host: str
    pid: int | None
    queues: list[str]
    status: str
    reason: str | None
    started_at: str
    heartbeat_at: str
    alive: bool
    heartbeat_age_s: float


@dataclass(frozen=True)
class ProcessLife:
    """One farm process as health reports it."""

    name: str
    kind: str
    host: str
    pid: int | None
    queues: list[str]
    status: str
    reason: str | None
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    heartbeat_age_s: float

    def to_dict(self) -> ProcessJson:
        return {
            "name": self.name,
            "kind": self.kind,
            "host": self.host,
            "pid": self.pid,
            "queues": self.queues,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "heartbeat_at": self.heartbeat_at.isoformat(),
            "alive": self.alive,
            "heartbeat_age_s": round(self.heartbeat_age_s, 1),
        }


@dataclass(frozen=True)
class StarvedQueue:
    """A queue with runs waiting and no live consumer."""

    queue: str
    waiting_runs: int
    device_id: int | None = None
    device_address: str | None = None

    def describe(self) -> str:
        where = f" (device {self.device_id}, {self.device_address})" if self.device_id else ""
        return (
            f"{self.waiting_runs} run(s) wait on {self.queue}{where} and no live worker consumes it"
        )


@dataclass
class FarmLiveness:
    """The farm's processes at ``now``, and what follows from them."""

    now: datetime
    processes: list[ProcessLife] = field(default_factory=list)
    starved: list[StarvedQueue] = field(default_factory=list)
    runs_in_flight: int = 0

    @property
    def live_queues(self) -> set[str]:
        return {q for p in self.processes if p.alive and p.kind == "worker" for q in p.queues}

    @property
    def known_queues(self) -> set[str]:
        """Queues some worker has ever consumed (alive or not)."""
        return {q for p in self.processes if p.kind == "worker" for q in p.queues}

    @property
    def beat(self) -> ProcessLife | None:
        """The beat heard from most recently."""
        beats = [p for p in self.processes if p.kind == "beat"]
        return max(beats, key=lambda p: p.heartbeat_at, default=None)

    def worker_for(self, queue: str) -> ProcessLife | None:
        """The live worker consuming ``queue``, else the one that did most recently."""
        consumers = [p for p in self.processes if p.kind == "worker" and queue in p.queues]
        live = [p for p in consumers if p.alive]
        return max(live or consumers, key=lambda p: p.heartbeat_at, default=None)

    def problems(self) -> list[str]:
        """What keeps the farm from making progress: starved queues, and no beat while runs
        are in flight (nothing would repair a lost message or a dead worker's run)."""
        found = [s.describe() for s in self.starved]
        beat = self.beat
        if self.runs_in_flight and (beat is None or not beat.alive):
            last = "never" if beat is None else f"{beat.heartbeat_age_s:.0f} s ago"
            found.append(
                f"beat (the reaper's scheduler) last ticked {last} and {self.runs_in_flight} "
                "run(s) are in flight"
            )
        return found


def liveness(session: Session, *, now: datetime | None = None) -> FarmLiveness:
    """Every farm process that is alive or died within a day, and the starved queues."""
    now = now or utcnow()
    horizon = dead_after_s()
    report = FarmLiveness(now=now)
    for row in session.scalars(select(Worker).order_by(Worker.kind, Worker.name)):
        beat_at = _aware(row.heartbeat_at)
        age = max(0.0, (now - beat_at).total_seconds())
        if now - beat_at > FORGET_AFTER:
            continue
        report.processes.append(
            ProcessLife(
                name=row.name,
                kind=str(row.kind),
                host=row.host,
                pid=row.pid,
                queues=list(row.queues or []),
                status=str(row.status),
                reason=row.reason,
                started_at=_aware(row.started_at),
                heartbeat_at=beat_at,
                alive=row.status == WorkerStatus.up and age <= horizon,
                heartbeat_age_s=age,
            )
        )
    live = report.live_queues
    # Runs waiting for a phone: queued and sent to the device's queue.
    waiting = session.execute(
        select(Device.id, Device.address, func.count(Run.id))
        .join(Run, Run.device_id == Device.id)
        .where(Run.status == RunStatus.queued, Run.enqueued_at.is_not(None))
        .group_by(Device.id, Device.address)
        .order_by(Device.id)
    ).all()
    for device_id, address, count in waiting:
        queue = f"device.{device_id}"
        if queue not in live:
            report.starved.append(StarvedQueue(queue, int(count), device_id, address))
    # Runs waiting for their job to start (compile queue).
    unstarted = session.scalar(
        select(func.count(Run.id)).where(
            Run.enqueued_at.is_(None), Run.status.in_((RunStatus.queued, RunStatus.compiling))
        )
    )
    if unstarted and COMPILE_QUEUE not in live:
        report.starved.append(StarvedQueue(COMPILE_QUEUE, int(unstarted)))
    report.runs_in_flight = int(
        session.scalar(
            # The statuses of runs not ended, listed (not "not ended"), so that ix_runs_status
            # finds the few in flight instead of the planner reading the whole runs table.
            select(func.count(Run.id)).where(Run.status.in_([s for s in RunStatus if not s.ended]))
        )
        or 0
    )
    return report


def offered(device: Device, report: FarmLiveness) -> bool:
    """Whether new runs may go to ``device``: a live worker consumes its queue, or no worker
    ever did (a device registered ahead of its worker). A device whose worker is gone is
    not offered: its runs would wait for nobody."""
    return device.queue in report.live_queues or device.queue not in report.known_queues


class DeviceWorker(TypedDict):
    """What the devices list says about a device's worker (``reason``: why it is not alive)."""

    worker: str | None
    alive: bool
    heartbeat_at: datetime | None
    reason: str | None


def device_worker(device: Device, report: FarmLiveness) -> DeviceWorker:
    """What the devices list says about a device's worker: ``worker``, ``alive``,
    ``heartbeat_at``, ``reason`` (why it is not alive)."""
    worker = report.worker_for(device.queue)
    if worker is None:
        return {"worker": None, "alive": False, "heartbeat_at": None, "reason": "no worker yet"}
    reason = None
    if not worker.alive:
        reason = worker.reason or f"its worker was last heard {worker.heartbeat_age_s:.0f} s ago"
    return {
        "worker": worker.name,
        "alive": worker.alive,
        "heartbeat_at": worker.heartbeat_at,
        "reason": reason,
    }
