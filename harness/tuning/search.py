"""MetaSchedule search over a Relax module, and applying its records to a build.

Candidates are built in this process (:class:`HostBuilder`: TVM's ``LocalBuilder`` starts a
pool of fresh Python processes that import TVM, 5-10 s each on this machine, which made every
trial cost more than the build itself). They are measured by a :class:`MeasureRunner`, which is
pluggable: :class:`HostRunner` times them on this machine; a device runner pushes them to a
phone. Records go to a MetaSchedule ``JSONDatabase`` in a work directory, which
:mod:`harness.tuning.store` fills from and empties into the farm's database.

Tuning and building must see the same TIR: both start with :func:`tuning_prefix` (TVM's
``static_shape_tuning_pipeline`` without its tuning step), so a workload tuned once is found by
its structural hash at every later build.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.compile.tuned import apply_records, cpu_tensor_intrinsics, tuning_prefix
from harness.errors import JobError, one_line
from harness.tuning import DEFAULT_POPULATION

__all__ = [
    "DEFAULT_POPULATION",
    "RECORDS_FILE",
    "WORKLOADS_FILE",
    "SearchResult",
    "apply_records",
    "cpu_tensor_intrinsics",
    "fixed_space_sizes",
    "host_runner",
    "open_database",
    "search",
    "search_threads",
    "task_workloads",
    "tasks_of",
    "trials_done",
    "tuning_prefix",
]

log = logging.getLogger(__name__)

WORKLOADS_FILE = "database_workload.json"
RECORDS_FILE = "database_tuning_record.json"


@dataclass(frozen=True)
class SearchResult:
    """What one search did: trials measured (valid or not), tasks, seconds."""

    trials: int
    tasks: list[str]
    seconds: float
    records: int


def search_threads() -> int:
    """The threads a search samples and evolves its candidates on, and builds them on: one
    per physical core of this host, as MetaSchedule's own default. Both were on one thread,
    most of a tuning's host time (py-spy, ppocr-cls on the emulated phone: 50% generating
    candidates, 27% building them), and nothing else runs while they do: the candidates are
    measured after, on the device. bench/search_threads.py: 1.6x the trials per second on
    two cores."""
    import os

    import psutil

    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def _host_builder() -> Any:
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    @derived_object
    class HostBuilder(PyBuilder):  # type: ignore[misc]
        """Builds each candidate in this process and exports it as a shared library, on
        ``threads`` threads (TVM's compiler and the linker release the GIL)."""

        def __init__(
            self,
            out_dir: str,
            export: dict[str, Any],
            on_error: Callable[[str], None],
            threads: int = 1,
        ) -> None:
            super().__init__()
            self.out_dir = out_dir
            self.export = export
            self.on_error = on_error
            self.threads = threads
            self.count = 0

        def _build_one(self, item: Any, where: Path) -> tuple[str | None, str | None]:
            path = str(where / "lib.so")
            try:
                # What TVM's default_build does, through tvm.compile (build is deprecated).
                mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod)
                tvm.compile(mod, target=item.target).export_library(path, **self.export)
            except Exception as exc:  # a candidate TVM cannot build: MetaSchedule skips it
                return None, one_line(str(exc), 400)
            return path, None

        def build(self, build_inputs: list[Any]) -> list[Any]:
            places = []
            for _ in build_inputs:
                self.count += 1
                # One directory per candidate: MetaSchedule's RemoveBuildArtifact callback
                # deletes the directory of each artifact once it is measured.
                where = Path(self.out_dir) / f"candidate-{self.count}"
                where.mkdir()
                places.append(where)
            if self.threads > 1 and len(build_inputs) > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(min(self.threads, len(build_inputs))) as pool:
                    built = list(pool.map(self._build_one, build_inputs, places))
            else:
                built = [self._build_one(i, w) for i, w in zip(build_inputs, places, strict=True)]
            results = []
            for path, message in built:
                if message is not None:
                    self.on_error(f"build: {message}")
                results.append(BuilderResult(path, message))
            return results

    return HostBuilder


def host_runner(*, number: int = 3, repeat: int = 1, min_repeat_ms: int = 40) -> Any:
    """A MetaSchedule runner that times candidates on this machine, in this process (TVM's
    ``time_evaluator`` on random inputs), and deletes each candidate's library afterwards."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common

    config = EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)

    @derived_object
    class HostRunner(PyRunner):  # type: ignore[misc]
        def run(self, runner_inputs: list[Any]) -> list[Any]:
            fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")
            device = tvm.cpu(0)
            futures = []
            for item in runner_inputs:
                path = Path(item.artifact_path)
                try:
                    rt_mod = tvm.runtime.load_module(str(path))
                    args_info = [a.as_json() for a in item.args_info]
                    args = alloc_argument_common(fill, device, args_info, 1)
                    costs = run_evaluator_common(rt_mod, device, config, args)
                    futures.append(LocalRunnerFuture(res=costs))
                except Exception as exc:
                    futures.append(LocalRunnerFuture(error_message=one_line(str(exc), 400)))
            return futures

    return HostRunner()


FAILED_S = 1e10  # MetaSchedule records a candidate that failed to build or run as taking this
FAILED_RUN_S = 1e9  # a record this slow is such a failure


def _was_run(result: Any) -> bool:
    """The runner ran the candidate (measured it, or it failed): not one that its tuning
    stopped before running (:meth:`KernelTiming.not_run`)."""
    from harness.tuning.device import NOT_RUN

    return not str(result.error_msg or "").startswith(NOT_RUN)


def _measure_callbacks() -> list[Any]:
    """MetaSchedule's default callbacks, but the database gets only the candidates that were
    run: its own AddToDatabase records a candidate whose tuning stopped before running it as a
    failure (1e10 s), which the farm would keep and count. A candidate that ran and failed is
    recorded so, as MetaSchedule does."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class AddRunToDatabase(PyMeasureCallback):  # type: ignore[misc]
        def apply(
            self,
            task_scheduler: Any,
            task_id: int,
            measure_candidates: list[Any],
            builder_results: list[Any],
            runner_results: list[Any],
        ) -> None:
            database = task_scheduler.database_
            if database is None:
                return
            context = task_scheduler.tasks_[task_id].ctx
            workload = database.commit_workload(context.mod)
            for candidate, result in zip(measure_candidates, runner_results, strict=True):
                if not _was_run(result):
                    continue
                failed = result.error_msg is not None or not result.run_secs
                run_secs = [FAILED_S] if failed else list(result.run_secs)
                database.commit_tuning_record(
                    ms.database.TuningRecord(
                        candidate.sch.trace,
                        workload,
                        run_secs,
                        context.target,
                        candidate.args_info,
                    )
                )

    return [
        AddRunToDatabase(),
        ms.measure_callback.RemoveBuildArtifact(),
        ms.measure_callback.UpdateCostModel(),
    ]


def _batch_callback(on_batch: Callable[[int], None], stop: Callable[[], bool] | None) -> Any:
    """A measure callback, after the ones that add the batch to the database:
    ``on_batch(candidates run)``; when ``stop()`` says so (a deadline passed, the tuning was
    cancelled), it ends every task, which ends the search."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class AfterBatch(PyMeasureCallback):  # type: ignore[misc]
        def apply(
            self,
            task_scheduler: Any,
            task_id: int,
            measure_candidates: list[Any],
            builder_results: list[Any],
            runner_results: list[Any],
        ) -> None:
            on_batch(sum(1 for result in runner_results if _was_run(result)))
            if stop is not None and stop():
                for i, task in enumerate(task_scheduler.tasks_):
                    if not task.is_terminated:
                        task_scheduler.terminate_task(i)

    return AfterBatch()


def _stored_hashes(mod: Any, candidates: list[Any]) -> list[int]:
    """The structural hash of each candidate's scheduled function as a record of it reads back
    from a JSONDatabase. A candidate's own module differs from that in small ways (an
    annotation's ``True`` reads back as ``1``), so both sides are compared after the same trip
    through a database's files."""
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_hash

    with tempfile.TemporaryDirectory(prefix="edgefarm-trace-") as where:
        database = ms.database.JSONDatabase(work_dir=where)
        workload = database.commit_workload(mod)
        for i, candidate in enumerate(candidates):
            # Each record's "time" is its position, to read them back in order.
            database.commit_tuning_record(
                ms.database.TuningRecord(candidate.sch.trace, workload, [float(i + 1)])
            )
        back = ms.database.JSONDatabase(work_dir=where).get_all_tuning_records()
        by_position = {int(float(r.run_secs[0])): r for r in back}
        return [
            int(structural_hash(by_position[i + 1].as_measure_candidate().sch.mod))
            for i in range(len(candidates))
        ]


def _measured_once(inner: Any) -> Any:
    """``inner`` (a MetaSchedule search strategy) made to skip the candidates the database
    holds a measurement of already.

    MetaSchedule remembers what it measured only within one search (its evolutionary search
    starts each with an empty set; a TODO in TVM says so): a tuning that resumes from its
    records, or a second model's tuning of the same workload, measures some of the same
    schedules again, on the farm's phones, whose time is the scarcest thing it has. The
    records' schedules are rebuilt from their traces once, when a task starts, and compared
    by structural hash, as MetaSchedule compares candidates; the skipped ones count as no
    trials. A candidate whose earlier measurement failed (a phone that fell over) may be
    measured again."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy

    # Batches in a row that held nothing new before a task is taken as done: the search
    # keeps proposing the records' own schedules, its space around them is measured.
    tries = 8

    @derived_object
    class MeasuredOnce(PySearchStrategy):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.seen: set[int] = set()

        def _initialize_with_tune_context(self, context: Any) -> None:
            self.inner._initialize_with_tune_context(context)
            self.mod = context.mod

        def pre_tuning(
            self,
            max_trials: int,
            num_trials_per_iter: int,
            design_spaces: list[Any],
            database: Any = None,
            cost_model: Any = None,
        ) -> None:
            self.seen = set()
            if database is not None and database.has_workload(self.mod):
                workload = database.commit_workload(self.mod)
                records = database.get_top_k(workload, len(database))
                # Through a database's files, as the candidates are compared: a record that
                # an open database got in this process has not made that trip yet.
                candidates = [record.as_measure_candidate() for record in records]
                self.seen = set(_stored_hashes(self.mod, candidates))
            self.inner.pre_tuning(
                max_trials, num_trials_per_iter, design_spaces, database, cost_model
            )

        def post_tuning(self) -> None:
            self.inner.post_tuning()

        def generate_measure_candidates(self) -> list[Any] | None:
            for _ in range(tries):
                candidates = self.inner.generate_measure_candidates()
                if candidates is None:
                    return None
                if not self.seen:  # nothing measured before: all new (MetaSchedule's own check)
                    return list(candidates)
                new = []
                for candidate, shash in zip(
                    candidates, _stored_hashes(self.mod, list(candidates)), strict=True
                ):
                    if shash not in self.seen:
                        self.seen.add(shash)
                        new.append(candidate)
                if new or not candidates:
                    return new
            return None

        def notify_runner_results(self, candidates: list[Any], results: list[Any]) -> None:
            self.inner.notify_runner_results(candidates, results)

        def clone(self) -> Any:
            return MeasuredOnce(self.inner.clone())

    return MeasuredOnce(inner)


def _task_logger(name: str) -> logging.Logger:
    """A task's logger. MetaSchedule logs every batch's search statistics (dozens of lines)
    at INFO: a farm's worker log would be mostly that. They show with debug logging."""
    logger = logging.getLogger(f"{__name__}.{name}")
    logger.setLevel(logging.INFO if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    return logger


def tasks_of(mod: Any, target: Any) -> list[Any]:
    """MetaSchedule's tasks (one per distinct TIR function) of a Relax module."""
    from tvm.s_tir import meta_schedule as ms

    cpu_tensor_intrinsics()
    return list(ms.relax_integration.extract_tasks(tuning_prefix(mod, target), target))


def fixed_space_sizes(tasks: list[Any]) -> dict[str, int]:
    """The tasks whose search space is a few fixed schedules (design spaces without a random
    decision: a reshape has exactly one), by name, with how many. MetaSchedule measures such a
    schedule again whenever it is asked for more trials than there are; a tuning asks for
    no more than the space holds."""
    from tvm.s_tir import meta_schedule as ms

    sizes: dict[str, int] = {}
    for task in tasks:
        context = ms.TuneContext(
            mod=task.dispatched[0],
            target=task.target,
            space_generator="post-order-apply",
            task_name=task.task_name,
            logger=_task_logger("space"),
            num_threads=1,
        ).clone()
        spaces = context.generate_design_space()
        if spaces and all(len(space.trace.decisions) == 0 for space in spaces):
            sizes[task.task_name] = len(spaces)
    return sizes


def task_workloads(tasks: list[Any]) -> list[str]:
    """The tasks' workloads as the records store names them (MetaSchedule's structural hash
    of each task's function, as an unsigned decimal; harness.compile.tuned.workload_hashes
    finds the same without the tasks)."""
    from tvm_ffi import structural_hash

    return sorted({str(int(structural_hash(t.dispatched[0]))) for t in tasks})


def open_database(work_dir: Path) -> Any:
    """The MetaSchedule JSONDatabase of ``work_dir``. Opening one parses every record in it
    (some 3-6 ms a record here: a minute for ten thousand), so a tuning opens its work
    directory once and hands the database to each search."""
    from tvm.s_tir import meta_schedule as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(work_dir))


def trials_done(tasks: list[Any], work_dir: Path, database: Any | None = None) -> dict[str, int]:
    """How many measured candidates ``work_dir`` (or its open ``database``) holds for each task
    (by task name): the trials that earlier tunings of this workload measured, on any model. A
    candidate that failed to build or run is not counted: a tuning broken by a bug of ours, or
    a phone that fell over, must not leave its tasks looking tuned."""
    from tvm_ffi import structural_hash

    if database is None:
        if not (work_dir / WORKLOADS_FILE).is_file():
            return {t.task_name: 0 for t in tasks}
        database = open_database(work_dir)
    counts: dict[int, int] = {}
    for record in database.get_all_tuning_records():
        times = [float(t) for t in (record.run_secs or [])]
        if not times or max(times) >= FAILED_RUN_S:
            continue
        shash = int(structural_hash(record.workload.mod))
        counts[shash] = counts.get(shash, 0) + 1
    return {t.task_name: counts.get(int(structural_hash(t.dispatched[0])), 0) for t in tasks}


def search(
    mod: Any,
    target: Any,
    work_dir: Path,
    *,
    trials: int,
    runner: Any | None = None,
    trials_per_iteration: int = 16,
    strategy: str = "evolutionary",
    population: int = DEFAULT_POPULATION,
    seed: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    export: dict[str, Any] | None = None,
    only: list[str] | None = None,
    on_build_error: Callable[[str], None] | None = None,
    tasks: list[Any] | None = None,
    threads: int | None = None,
    database: Any | None = None,
) -> SearchResult:
    """Tune every TIR function of ``mod`` for ``target`` with ``trials`` measurements in all,
    adding to the records in ``work_dir`` (a JSONDatabase: a search continues from them).
    ``runner`` measures (default: :func:`host_runner`). ``on_batch`` is called after each
    measured batch is in ``work_dir``; once ``stop()`` is true the search stops after its
    current batch. ``export``: keyword arguments of ``export_library`` for
    the candidates (a cross compiler's ``fcompile``). ``only``: tune just these tasks (by
    name). ``on_build_error(message)`` for each candidate that failed to build. ``tasks``:
    ``tasks_of(mod, target)``, when the caller already has them: extracting them lowers the
    whole model (5-10 s for mobilenet-v1-0.25), too much to repeat for every task's search.
    ``threads``: the search's own (sampling, evolving, the cost model's scoring, building;
    default :func:`search_threads`), not the candidates' while they are timed. ``database``:
    ``work_dir``'s, when the caller has it open (:func:`open_database`: a tuning that searches
    task by task parses its records once, not twice a task)."""
    from tvm.s_tir import meta_schedule as ms

    if trials < 1:
        raise JobError("compile", f"a tuning needs at least one trial, not {trials}")
    if population < 1:
        raise JobError("compile", f"the search population is at least 1, not {population}")
    if threads is None:
        threads = search_threads()
    if threads < 1:
        raise JobError("compile", f"a search runs on at least one thread, not {threads}")
    work_dir.mkdir(parents=True, exist_ok=True)
    if tasks is None:
        tasks = tasks_of(mod, target)
    if only is not None:
        tasks = [t for t in tasks if t.task_name in only]
    if not tasks:
        raise JobError("compile", "the model has no operator MetaSchedule can tune")
    if strategy == "evolutionary":
        chosen: Any = ms.search_strategy.EvolutionarySearch(
            population_size=population, init_min_unmeasured=min(50, population)
        )
    elif strategy == "replay-trace":
        chosen = ms.search_strategy.ReplayTrace()
    else:
        raise JobError("compile", f"unknown search strategy {strategy!r}")
    chosen = _measured_once(chosen)
    if database is None:
        database = open_database(work_dir)
    before = len(database)
    builds = tempfile.mkdtemp(prefix="edgefarm-tune-")
    start = time.perf_counter()
    try:
        # The contexts are made here, not by extracted_tasks_to_tune_contexts: its loggers come
        # from MetaSchedule's logging set-up, which fails on its second call in a process
        # (a None in its own handler list); ours log through Python's logging.
        contexts, weights = [], []
        for task, rand_state in zip(tasks, ms.utils.fork_seed(seed, n=len(tasks)), strict=True):
            contexts.append(
                ms.TuneContext(
                    mod=task.dispatched[0],
                    target=task.target,
                    space_generator="post-order-apply",
                    search_strategy=chosen,
                    task_name=task.task_name,
                    logger=_task_logger(task.task_name),
                    rand_state=rand_state,
                    num_threads=threads,
                ).clone()
            )
            weights.append(float(task.weight))
        callbacks = _measure_callbacks()
        if on_batch is not None or stop is not None:
            callbacks.append(_batch_callback(on_batch or (lambda n: None), stop))
        ms.tune.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(work_dir),
            max_trials_global=trials,
            num_trials_per_iter=min(trials_per_iteration, trials),
            builder=_host_builder()(
                builds, export or {}, on_build_error or (lambda m: None), threads
            ),
            runner=runner if runner is not None else host_runner(),
            database=database,
            measure_callbacks=callbacks,
        )
    finally:
        shutil.rmtree(builds, ignore_errors=True)
    seconds = time.perf_counter() - start
    after = len(database)  # the records this search committed are in it (and in its files)
    return SearchResult(
        trials=after - before,
        tasks=[t.task_name for t in tasks],
        seconds=round(seconds, 3),
        records=after,
    )
