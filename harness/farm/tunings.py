"""Farm tunings: MetaSchedule's search as a farm job (``POST /api/v1/tunings``).

A submission names a model, devices (a selector, as for a benchmark) and a budget; it becomes
one :class:`~harness.db.Tuning` per device class among the selected devices, because records
are kept per class. The search runs on the ``tuning`` queue (``workers.tasks.tuning``); each
batch of candidates is split over the class's phones that are idle at that moment, one
:class:`~harness.db.TuningSlice` each, measured by the phone's own worker under a lease of its
own. Benchmarks come first: a slice is taken only by an idle phone for which no run waits,
and a slice is one batch, seconds long, so a run that arrives waits at most that long.

The lease functions mirror :mod:`harness.farm.leases` (a slice holds ``devices.state`` with
``tuning_slice_id`` instead of ``current_run_id``); a run's ``acquire_lease`` never takes a
phone a slice holds, and the reaper's ``expire_leases`` frees one whose worker died. Functions
here never commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from harness.db import (
    Device,
    DeviceHealth,
    DeviceState,
    Model,
    Run,
    RunStatus,
    Tuning,
    TuningStatus,
    utcnow,
)
from harness.devices.base import DeviceFacts
from harness.farm import InvalidRequest
from harness.farm.jobs import validate_inputs
from harness.farm.selection import DeviceSelector, select_devices
from harness.jsontypes import MAX_THREADS
from harness.tuning import DEFAULT_POPULATION, MAX_POPULATION

# tvm-cpu tunes the whole model; the BYOC backends what their partition (default options)
# leaves on the CPU (harness.backends.cpu_part).
TUNABLE_BACKENDS = ("tvm-cpu", "tvm-nnapi", "tvm-neuron")
DEFAULT_TRIALS = 32  # per task, when a submission gives no budget
MAX_TRIALS = 100_000
MAX_MINUTES = 24 * 60.0
MAX_BATCH = 256


@dataclass(frozen=True)
class TuningRequest:
    """What a submission asks for, checked by :func:`create_tunings`."""

    devices: DeviceSelector
    backend: str = "tvm-cpu"
    trials: int | None = None
    minutes: float | None = None
    batch: int = 16
    inputs: tuple[str, ...] = ()
    threads: int = 0  # TVM's pool while timing (the runs' option threads); 0: the default
    population: int = DEFAULT_POPULATION  # the evolutionary search's, each batch


def class_of(device: Device) -> str:
    """The device class a device's records are kept under."""
    from harness.measure.calibration import device_class

    return device_class(DeviceFacts.from_dict(device.facts or {"id": device.address}))


def _budget(request: TuningRequest) -> tuple[int | None, float | None]:
    trials, minutes = request.trials, request.minutes
    if trials is not None and minutes is not None:
        raise InvalidRequest("give trials or minutes, not both", field=("minutes",))
    if trials is None and minutes is None:
        trials = DEFAULT_TRIALS
    if trials is not None and not 1 <= trials <= MAX_TRIALS:
        raise InvalidRequest(
            f"trials (per task) must be 1..{MAX_TRIALS}, not {trials}", field=("trials",)
        )
    if minutes is not None and not 0 < minutes <= MAX_MINUTES:
        raise InvalidRequest(
            f"minutes must be more than 0 and at most {MAX_MINUTES:g}, not {minutes}",
            field=("minutes",),
        )
    if not 1 <= request.batch <= MAX_BATCH:
        raise InvalidRequest(
            f"batch must be 1..{MAX_BATCH} candidates, not {request.batch}", field=("batch",)
        )
    if not 0 <= request.threads <= MAX_THREADS:
        raise InvalidRequest(
            f"threads must be 0 (the runtime's default) to {MAX_THREADS}, not {request.threads}",
            field=("threads",),
        )
    if not 1 <= request.population <= MAX_POPULATION:
        raise InvalidRequest(
            f"population must be 1..{MAX_POPULATION} candidates, not {request.population}",
            field=("population",),
        )
    return trials, minutes


def create_tunings(
    request: TuningRequest,
    *,
    model: Model,
    session: Session,
    submitted_by: str = "",
    night_id: int | None = None,
) -> list[Tuning]:
    """One queued Tuning per device class among the devices ``request`` selects (flushed, not
    committed). Everything is checked first: the backend, the budget, the input specs against
    the model. Every target can be tuned; what its candidates are linked with (the NDK's
    clang for an Android phone) is the tuning worker's, as it is for a run's build."""
    if request.backend not in TUNABLE_BACKENDS:
        raise InvalidRequest(
            f"backend {request.backend!r} cannot be tuned; tunable: {', '.join(TUNABLE_BACKENDS)}",
            field=("backend",),
        )
    if model.format != "onnx" and model.format not in ("tflite", "pt2"):
        raise InvalidRequest(f"model {model.name} ({model.format}) cannot be tuned")
    trials, minutes = _budget(request)
    validate_inputs(request.inputs, model)
    devices = select_devices(request.devices, session=session)
    by_class: dict[str, list[Device]] = defaultdict(list)
    for device in devices:
        by_class[class_of(device)].append(device)
    tunings: list[Tuning] = []
    for device_class, members in sorted(by_class.items()):
        target = members[0].target
        tuning = Tuning(
            model_id=model.id,
            backend=request.backend,
            device_class=device_class,
            target=target,
            pool=request.devices.pool or "",
            inputs=list(request.inputs),
            trials=trials,
            minutes=minutes,
            batch=request.batch,
            threads=request.threads,
            population=request.population,
            status=TuningStatus.queued,
            submitted_by=submitted_by[:128],
            night_id=night_id,
            report={},
        )
        session.add(tuning)
        tunings.append(tuning)
    session.flush()
    return tunings


def cancel_tuning(session: Session, tuning_id: int) -> bool:
    """Cancel tuning ``tuning_id`` if it is queued or running; False when it had ended (it
    stays as it ended). Its search sees the status before its next batch and stops, its
    records kept (a later tuning continues from them); it fills in the report of what it did.
    One conditional UPDATE, so a cancel never overwrites a tuning that has just ended."""
    result = session.execute(
        update(Tuning)
        .where(
            Tuning.id == tuning_id,
            Tuning.status.in_([TuningStatus.queued, TuningStatus.running]),
        )
        .values(
            status=TuningStatus.cancelled,
            finished_at=func.coalesce(Tuning.finished_at, utcnow()),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def class_devices(session: Session, tuning: Tuning) -> list[Device]:
    """The good devices of the tuning's class (and pool, if it named one), by id."""
    query = select(Device).where(Device.health == DeviceHealth.good, Device.target == tuning.target)
    if tuning.pool:
        query = query.where(Device.pool == tuning.pool)
    return [
        d for d in session.scalars(query.order_by(Device.id)) if class_of(d) == tuning.device_class
    ]


def _run_waits(device_id: int) -> object:
    """A run is queued for the device (due now or waiting out a busy retry)."""
    return exists().where(
        Run.device_id == device_id,
        Run.status == RunStatus.queued,
        Run.enqueued_at.is_not(None),
    )


def idle_devices(session: Session, tuning: Tuning, candidates: Sequence[Device]) -> list[Device]:
    """Of ``candidates`` (the class's devices), those a slice may take now: idle, and no run
    waiting for them. Read again from the database."""
    ids = [d.id for d in candidates]
    if not ids:
        return []
    rows = session.scalars(
        select(Device)
        .where(Device.id.in_(ids), Device.state == DeviceState.idle)
        .execution_options(populate_existing=True)
    )
    return [d for d in rows if not session.scalar(select(_run_waits(d.id)))]  # type: ignore[call-overload]


def run_waits_for(session: Session, device_id: int) -> bool:
    return bool(session.scalar(select(_run_waits(device_id))))  # type: ignore[call-overload]


def acquire_slice_lease(
    session: Session,
    device_id: int,
    slice_id: int,
    timeout_s: float,
    *,
    now: datetime | None = None,
) -> bool:
    """Lease an idle device to slice ``slice_id`` until ``now + timeout_s``; False if anyone
    holds it. One conditional UPDATE: PostgreSQL re-checks ``state`` after a concurrent
    writer commits, SQLite serialises writers."""
    now = now or utcnow()
    result = session.execute(
        update(Device)
        .where(Device.id == device_id, Device.state == DeviceState.idle)
        .values(
            state=DeviceState.running,
            current_run_id=None,
            lease_attempt=None,
            tuning_slice_id=slice_id,
            lease_expires_at=now + timedelta(seconds=timeout_s),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew_slice_lease(session: Session, device_id: int, slice_id: int, timeout_s: float) -> bool:
    now = utcnow()
    result = session.execute(
        update(Device)
        .where(Device.id == device_id, Device.tuning_slice_id == slice_id)
        .values(lease_expires_at=now + timedelta(seconds=timeout_s), last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def release_slice_lease(session: Session, device_id: int, slice_id: int) -> bool:
    """Give the device back if slice ``slice_id`` still holds it."""
    result = session.execute(
        update(Device)
        .where(Device.id == device_id, Device.tuning_slice_id == slice_id)
        .values(
            state=DeviceState.idle,
            tuning_slice_id=None,
            lease_expires_at=None,
            last_seen_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
