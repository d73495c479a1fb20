"""One tuning of a model for a device: what ``edgefarm tune`` does.

The model's tasks (its distinct TIR functions) are searched one after another; candidates are
built here and measured on the device with the native runner's kernel mode
(:mod:`harness.tuning.device`). After every measured batch the new records go to the records
store (the farm's database, or ``edgefarm bench``'s), committed, so a tuning killed at any
point keeps all but its last batch. A task's budget counts the records the store already has
for its workload, from any earlier tuning of any model: a tuning started again continues
where it stopped, and a second model with the same layer shapes finds them tuned. At the end,
each workload's best records are timed again side by side (:mod:`harness.tuning.confirm`),
and builds apply the fastest of those.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from harness.compile.build import tvm_version
from harness.compile.targets import TargetSpec, get_target
from harness.db import session_scope
from harness.devices.base import Device, DeviceFacts
from harness.errors import InfrastructureError, JobError
from harness.modelio import InputSpec, PreparedModel
from harness.tuning import DEFAULT_CONFIRM_ROUNDS, DEFAULT_CONFIRM_TOP, DEFAULT_POPULATION
from harness.tuning.confirm import ConfirmReport

if TYPE_CHECKING:
    from harness.tuning.device import KernelTimer

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]


def _quiet(event: str, message: str) -> None:
    log.info("%s: %s", event, message)


def records_software() -> str:
    """The software part of a records key: schedules are valid for one TVM version."""
    return f"tvm {tvm_version()}"[:64]


def records_key_for(facts: DeviceFacts) -> Any:
    """The records key of a device: its class, its compile target (with the CPU its code is
    generated for: ``host/x86-64-v4``), this TVM."""
    from harness.measure.calibration import device_class
    from harness.tuning.store import RecordsKey

    return RecordsKey(device_class(facts), get_target(facts.target).label, records_software())


def tuning_target(spec: TargetSpec, cores: int) -> Any:
    """The TVM target a tuning for ``spec`` searches with (MetaSchedule needs the device's
    core count); a build applies its records with the plain target."""
    import tvm

    spec.tvm_target()  # an unknown CPU (EDGEFARM_HOST_CPU) refused before the search
    return tvm.target.Target({**dict(spec.tvm), "num-cores": cores})


def device_cores(device: Device) -> int:
    """The device's online CPU count (``nproc``: toybox on a phone, coreutils here)."""
    result = device.shell(["nproc"], timeout_s=30)
    text = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else []
    if result.exit_code != 0 or not text or not text[0].isdigit() or int(text[0]) < 1:
        raise InfrastructureError(f"{device.id}: cannot read its CPU count with nproc")
    return int(text[0])


def export_for(spec: TargetSpec) -> dict[str, Any]:
    """How candidates are linked for ``spec``: this machine's compiler, its cross one, or
    for an Android phone the NDK's clang (as its models are: ANDROID_NDK_HOME; a JobError
    says what to set when there is none)."""
    if spec.needs_ndk:
        from harness.compile.ndk import find_clang, ndk_fcompile
        from harness.config import get_settings

        settings = get_settings()
        clang = find_clang(settings.android_ndk_home, settings.android_api_level)
        return {"fcompile": ndk_fcompile(clang)}
    if spec.toolchain is None:
        return {}
    # Passing the triple function as cross_compiler's second argument (its options) made
    # every linux-arm64 candidate fail to build ("'function' object is not iterable").
    return {"fcompile": spec.toolchain.fcompile(stage="link")}


@dataclass
class TaskReport:
    """One task: trials found in the store before, trials measured now."""

    name: str
    before: int
    measured: int = 0


@dataclass
class TuningReport:
    """What a tuning did. ``measured_on`` names where candidates were timed."""

    model: str
    device: str
    device_class: str
    target: str
    measured_on: str
    trials_per_task: int | None
    tasks: list[TaskReport] = field(default_factory=list)
    batches: int = 0
    saved: int = 0  # records added to the store
    seconds: float = 0.0
    stopped_by_deadline: bool = False
    cancelled: bool = False
    failed: int = 0  # candidates that failed to build or run (not counted as trials)
    first_error: str | None = None
    threads: int = 0  # TVM's thread pool while candidates were timed (0: the runtime's default)
    population: int = DEFAULT_POPULATION  # the evolutionary search's, each batch
    # The workloads' best records timed again at the end (None: not done, e.g. cancelled).
    confirmation: ConfirmReport | None = None

    def dump(self) -> dict[str, Any]:
        """The JSON form a farm tuning keeps (``tunings.report``)."""
        return {
            **{k: v for k, v in asdict(self).items() if k != "tasks"},
            "tasks": [asdict(t) for t in self.tasks],
            "reused": self.reused,
        }

    @property
    def reused(self) -> list[str]:
        """Tasks that needed no trial: earlier tunings had done them."""
        return [t.name for t in self.tasks if t.measured == 0 and t.before > 0]


@dataclass(frozen=True)
class Budget:
    """A tuning's budget: trials per task (counting the store's records) or minutes; and its
    confirmation (:mod:`harness.tuning.confirm`): the best ``confirm`` records of each
    workload timed again in ``confirm_rounds`` rounds (0: none)."""

    trials: int | None = None
    minutes: float | None = None
    batch: int = 16
    population: int = DEFAULT_POPULATION
    seed: int | None = None
    confirm: int = DEFAULT_CONFIRM_TOP
    confirm_rounds: int = DEFAULT_CONFIRM_ROUNDS

    def check(self) -> None:
        if (self.trials is None) == (self.minutes is None):
            raise JobError(
                "compile", "give either a number of trials per task or minutes, not both"
            )
        if self.trials is not None and self.trials < 1:
            raise JobError("compile", f"trials per task must be at least 1, not {self.trials}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise JobError("compile", f"minutes must be a positive number, not {self.minutes}")
        if self.batch < 1:
            raise JobError("compile", f"a batch holds at least one candidate, not {self.batch}")
        if self.confirm < 0:
            raise JobError(
                "compile", f"records confirmed per workload: 0 or more, not {self.confirm}"
            )
        if self.confirm_rounds < 1:
            raise JobError("compile", f"confirmation rounds: at least 1, not {self.confirm_rounds}")


class _Counting:
    """A timer that reports each candidate that failed to run (``failed(message)``)."""

    def __init__(self, timer: KernelTimer, failed: Callable[[str], None]) -> None:
        self.timer = timer
        self.failed = failed

    def time(self, candidates: list[tuple[Path, list[str]]]) -> list[Any]:
        timings = self.timer.time(candidates)
        for timing in timings:
            if timing.was_run and (timing.error is not None or not timing.costs_s):
                self.failed(timing.error or "no time reported")
        return timings


def tune_model(
    model_path: Path,
    device: Device,
    factory: sessionmaker[Session],
    *,
    inputs: list[InputSpec] | None = None,
    trials: int | None = None,
    minutes: float | None = None,
    batch: int = 16,
    population: int = DEFAULT_POPULATION,
    seed: int | None = None,
    progress: Progress = _quiet,
    lower: Callable[[Any], Any] | None = None,
    threads: int = 0,
    confirm: int = DEFAULT_CONFIRM_TOP,
    confirm_rounds: int = DEFAULT_CONFIRM_ROUNDS,
) -> TuningReport:
    """Tune ``model_path`` for ``device`` (candidates measured there), ``trials`` per task
    (counting the store's records) or for ``minutes``; records saved to ``factory``'s
    database after every batch; then the ``confirm`` best records of each workload timed
    again in ``confirm_rounds`` rounds (:mod:`harness.tuning.confirm`; 0: not). ``lower``:
    what of the model is tuned — None for the whole model (tvm-cpu), else a BYOC backend's
    partition, whose functions left on the CPU are the tasks
    (:func:`harness.backends.cpu_part`). ``threads``: TVM's pool while timing (the backend
    option ``threads`` of the runs the records are for; 0: the runtime's default)."""
    from harness.modelio import load
    from harness.tuning.device import DeviceKernelTimer

    budget = Budget(trials, minutes, batch, population, seed, confirm, confirm_rounds)
    budget.check()
    facts = device.facts()
    spec = get_target(facts.target)
    export_for(spec)  # refused before the model is read
    progress("import", f"reading {model_path.name}")
    model = load(model_path, inputs or [])
    cores = device_cores(device)
    return tune_prepared(
        model,
        key=records_key_for(facts),
        spec=spec,
        cores=cores,
        timer=DeviceKernelTimer(device, facts.target, threads=threads),
        measured_by=facts.id,
        measured_on=(
            f"{facts.id} (edgefarm-runner --kernels, {cores} cores, {threads_text(threads)})"
        ),
        factory=factory,
        budget=budget,
        progress=progress,
        lower=lower,
        threads=threads,
    )


def threads_text(threads: int) -> str:
    """How a tuning's thread count reads in its report."""
    if threads == 0:
        return "TVM's default threads"
    return f"{threads} thread{'s' if threads != 1 else ''}"


def pace(measured: int, wanted: int | None, seconds: float, *, left_s: float | None = None) -> str:
    """How a tuning is getting on, for its batch lines: ``measured`` candidates in ``seconds``,
    of at most ``wanted`` (a trials budget: tasks whose space runs out end sooner, so the time
    left is an upper bound) or with ``left_s`` of a time budget left."""
    rate = measured / seconds if seconds > 0 else 0.0
    text = f"{rate:.1f} a second"
    if wanted is not None:
        text = f"{measured} of at most {wanted} candidates, {text}"
        if rate > 0 and wanted > measured:
            text += f", at most {_duration((wanted - measured) / rate)} left"
    elif left_s is not None:
        text += f", {_duration(max(left_s, 0.0))} of the budget left"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def tune_prepared(
    model: PreparedModel,
    *,
    key: Any,
    spec: TargetSpec,
    cores: int,
    timer: KernelTimer,
    measured_by: str,
    measured_on: str,
    factory: sessionmaker[Session],
    budget: Budget,
    progress: Progress = _quiet,
    should_stop: Callable[[], bool] | None = None,
    on_saved: Callable[[TuningReport], None] | None = None,
    lower: Callable[[Any], Any] | None = None,
    threads: int = 0,
) -> TuningReport:
    """Tune a prepared model for ``key`` (its device class, target, TVM) with candidates
    timed by ``timer`` on devices with ``cores`` CPUs: the work of :func:`tune_model` and of
    a farm tuning. After every saved batch ``on_saved(report)`` (a farm keeps its row up to
    date) and ``should_stop()`` (a cancelled tuning ends after the batch it is in). ``lower``:
    the backend's partition (:func:`harness.backends.cpu_part`), applied to the imported
    module first."""
    from harness.modelio import to_relax
    from harness.tuning.confirm import confirm_records
    from harness.tuning.device import device_runner
    from harness.tuning.search import (
        fixed_space_sizes,
        open_database,
        search,
        task_workloads,
        tasks_of,
        trials_done,
    )
    from harness.tuning.store import SaveCursor, load_records, save_records

    budget.check()
    export = export_for(spec)
    mod = to_relax(model)
    if lower is not None:
        mod = lower(mod)
    target = tuning_target(spec, cores)
    report = TuningReport(
        model=model.name,
        device=measured_by,
        device_class=key.device_class,
        target=key.target,
        measured_on=measured_on,
        trials_per_task=budget.trials,
        threads=threads,
        population=budget.population,
    )
    deadline = time.monotonic() + budget.minutes * 60 if budget.minutes is not None else None
    stopped = False

    def stop_now() -> bool:
        nonlocal stopped
        if deadline is not None and time.monotonic() >= deadline:
            return True
        if should_stop is not None and should_stop():
            stopped = True
            return True
        return False

    work = Path(tempfile.mkdtemp(prefix="edgefarm-tuning-"))
    start = time.perf_counter()
    try:
        progress("tasks", f"extracting the tasks of {model.name}")
        tasks = tasks_of(mod, target)
        # Only this model's workloads: the searches use no other record, and every record in
        # the work directory is parsed when it is opened (seconds per thousand).
        with session_scope(factory) as session:
            load_records(work, key, workloads=task_workloads(tasks), session=session)
        cursor = SaveCursor()  # the first save reads the loaded records once, later ones not
        database = open_database(work)  # once: each search adds to it
        done = trials_done(tasks, work, database)
        report.tasks = [TaskReport(t.task_name, done[t.task_name]) for t in tasks]
        wants: dict[str, int] = {}  # a trials budget: each task's trials still to measure
        wanted = None
        if budget.trials is not None:
            fixed = fixed_space_sizes(tasks)
            for task in report.tasks:
                size = min(budget.trials, fixed.get(task.name, budget.trials))
                wants[task.name] = size - task.before
            wanted = sum(max(want, 0) for want in wants.values())
        searched, searching_since = 0, time.perf_counter()  # this tuning's own candidates

        def saved(count: int) -> None:
            nonlocal searched
            if count == 0:  # a task whose search space is spent: nothing was measured
                return
            with session_scope(factory) as session:
                report.saved += save_records(
                    work, key, device=measured_by, session=session, cursor=cursor
                )
            report.batches += 1
            report.seconds = round(time.perf_counter() - start, 3)
            searched += count
            so_far = pace(
                searched,
                wanted,
                time.perf_counter() - searching_since,
                left_s=deadline - time.monotonic() if deadline is not None else None,
            )
            progress(
                "batch",
                f"{count} candidates measured on {measured_by}; {report.saved} saved ({so_far})",
            )
            if on_saved is not None:
                on_saved(report)

        def failed(message: str) -> None:
            report.failed += 1
            if report.first_error is None:
                report.first_error = message

        common: dict[str, Any] = {
            "runner": device_runner(_Counting(timer, failed)),
            "on_build_error": failed,
            "trials_per_iteration": budget.batch,
            "population": budget.population,
            "seed": budget.seed,
            "on_batch": saved,
            "stop": stop_now,
            "export": export,
            "tasks": tasks,
            "database": database,
        }
        if budget.trials is None:
            # A time budget: every task in one search, MetaSchedule's scheduler shares it.
            progress("tune", f"{len(tasks)} task(s) for {budget.minutes} min on {measured_by}")
            search(mod, target, work, trials=1 << 20, **common)
        else:
            for task in report.tasks:
                want = wants[task.name]
                if want <= 0:
                    continue
                if stop_now():
                    break
                progress("tune", f"{task.name}: {want} trial(s) on {measured_by}")
                search(mod, target, work, trials=want, only=[task.name], **common)
        after = trials_done(tasks, work, database)
        for task in report.tasks:
            task.measured = after[task.name] - task.before
        if deadline is not None and time.monotonic() >= deadline:
            report.stopped_by_deadline = True
        report.cancelled = stopped
        with session_scope(factory) as session:  # anything the last callback did not see
            report.saved += save_records(
                work, key, device=measured_by, session=session, cursor=cursor
            )
        if report.failed and not stopped and not any(t.measured for t in report.tasks):
            raise JobError(
                "run",
                f"every candidate failed ({report.failed}); the first: {report.first_error}",
            )
        if budget.confirm and not stopped:
            report.confirmation = confirm_records(
                key,
                task_workloads(tasks),
                factory=factory,
                timer=timer,
                target=target,
                export=export,
                top=budget.confirm,
                rounds=budget.confirm_rounds,
                stop=should_stop,
                progress=progress,
                on=measured_by,
            )
            if report.confirmation.stopped:  # cancelled (or its worker stopped) meanwhile
                report.cancelled = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.seconds = round(time.perf_counter() - start, 3)
    return report
