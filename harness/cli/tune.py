"""``edgefarm tune``: MetaSchedule tuning of a model, candidates measured on the device."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harness.cli.options import global_options, parse_options
from harness.cli.render import console, out
from harness.cli.usage import usage_errors
from harness.errors import JobError
from harness.tuning import DEFAULT_CONFIRM_ROUNDS, DEFAULT_CONFIRM_TOP, DEFAULT_POPULATION

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from harness.tuning.session import TuningReport

log = logging.getLogger(__name__)

# tvm-cpu tunes the whole model; the BYOC backends the functions their partition leaves on
# the CPU (harness.backends.cpu_part).
TUNABLE_BACKENDS = ("tvm-cpu", "tvm-nnapi", "tvm-neuron")


def register(app: typer.Typer) -> None:
    app.command()(tune)


def records_store(url: str | None) -> sessionmaker[Session]:
    """Sessions on the tuning records' store: ``url`` (a farm's database, migrated first), or
    ``edgefarm bench``'s own ($EDGEFARM_HOME/edgefarm.db), where ``edgefarm bench`` reads
    them."""
    from harness.db import make_engine, make_session_factory
    from harness.db.costs import local_store
    from harness.db.migrate import upgrade

    if url is None:
        return local_store()
    upgrade(url)
    return make_session_factory(make_engine(url))


def tune(
    model: Annotated[Path, typer.Argument(help="An ONNX, TFLite or PyTorch .pt2 model file.")],
    device: Annotated[
        str, typer.Option("--device", "-d", help="Where candidates are measured: tcp:HOST:PORT…")
    ],
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            "-b",
            help="tvm-cpu (the whole model), tvm-nnapi or tvm-neuron (what their partition "
            "leaves on the CPU).",
        ),
    ] = "tvm-cpu",
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="BACKEND.KEY=VALUE: the partition's options, and threads (TVM's thread pool "
            "while timing: tune with the threads the benchmarks will run with).",
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(help="Trials per task, counting the store's (default 32 without --minutes)."),
    ] = None,
    minutes: Annotated[float | None, typer.Option(help="Tune for this long instead.")] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Records store URL (default: edgefarm bench's store)."),
    ] = None,
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Input spec NAME:1x3x224x224[:float32]; repeatable."),
    ] = None,
    batch: Annotated[int, typer.Option(help="Candidates measured per device round trip.")] = 16,
    population: Annotated[
        int, typer.Option(help="Evolutionary search population (candidates per generation).")
    ] = DEFAULT_POPULATION,
    seed: Annotated[int | None, typer.Option(help="Search seed.")] = None,
    confirm: Annotated[
        int,
        typer.Option(
            help="At the end, time each workload's N best records again side by side; builds "
            "apply the fastest of those (0: not; builds take the fastest measured once)."
        ),
    ] = DEFAULT_CONFIRM_TOP,
    confirm_rounds: Annotated[
        int, typer.Option(help="Rounds of that timing (each record's median counts).")
    ] = DEFAULT_CONFIRM_ROUNDS,
) -> None:
    """Tune MODEL for the device's class: candidates built here, measured on the device; the
    records are saved after every batch, so a stopped tuning resumes."""
    from harness.backends import cpu_part
    from harness.backends.tvm_cpu import split_threads
    from harness.devices import open_device
    from harness.modelio import parse_input_spec
    from harness.tuning.session import tune_model

    with usage_errors():
        if backend not in TUNABLE_BACKENDS:
            raise JobError(
                "compile", f"--backend {backend}: {', '.join(TUNABLE_BACKENDS)} can be tuned"
            )
        threads, options = split_threads(parse_options(option or []).get(backend))
        if (options or {}).get("partition") == "cost":
            raise JobError(
                "compile",
                f"{backend} with partition: cost decides its CPU part by calibrating on the "
                "phone at build time; tune with partition: all",
            )
        if trials is not None and minutes is not None:
            raise JobError("compile", "give --trials or --minutes, not both")
        if trials is None and minutes is None:
            trials = 32
        check_budget(trials=trials, minutes=minutes, batch=batch, population=population)
        if confirm < 0:
            raise JobError(
                "compile", f"--confirm (records per workload) is 0 or more, not {confirm}"
            )
        if confirm_rounds < 1:
            raise JobError("compile", f"--confirm-rounds is at least 1, not {confirm_rounds}")
        specs = [parse_input_spec(text) for text in input or []]
        if not model.is_file():
            raise JobError("import", f"{model}: no such model file")
    factory = records_store(db)
    phone = open_device(device)
    try:
        # tvm-cpu tunes the whole model; a BYOC backend what its partition, resolved for this
        # phone as its build resolves it, leaves on the CPU.
        lower = cpu_part(backend, phone.facts(), options)
        with console.status("starting", spinner="dots") as status:

            def progress(event: str, message: str) -> None:
                status.update(f"[bold]{event}[/]: {message}")
                if global_options.debug:
                    log.info("%s: %s", event, message)

            report = tune_model(
                model,
                phone,
                factory,
                inputs=specs,
                trials=trials,
                minutes=minutes,
                batch=batch,
                population=population,
                seed=seed,
                progress=progress,
                lower=lower,
                threads=threads,
                confirm=confirm,
                confirm_rounds=confirm_rounds,
            )
    finally:
        phone.close()
    print_report(report)


def check_budget(*, trials: int | None, minutes: float | None, batch: int, population: int) -> None:
    """The search's numbers as the command line gives them: a JobError naming the option."""
    if trials is not None and trials < 1:
        raise JobError("compile", f"--trials (per task) must be at least 1, not {trials}")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise JobError("compile", f"--minutes must be a positive number, not {minutes}")
    if batch < 1:
        raise JobError("compile", f"--batch (candidates per round trip) is at least 1, not {batch}")
    if population < 1:
        raise JobError("compile", f"--population must be at least 1, not {population}")


def print_report(report: TuningReport) -> None:
    from rich.table import Table

    table = Table(title=f"tuning {report.model} for {report.device_class} ({report.target})")
    table.add_column("task")
    table.add_column("trials before", justify="right")
    table.add_column("measured now", justify="right")
    for task in report.tasks:
        table.add_row(task.name, str(task.before), str(task.measured))
    out.print(table)
    measured = sum(t.measured for t in report.tasks)
    where = f"on {report.measured_on}" if measured else "nowhere (nothing left to tune)"
    out.print(
        f"{measured} trial(s) measured {where} in {report.seconds:.1f} s, {report.batches} "
        f"batch(es); {report.saved} record(s) saved; {len(report.reused)} task(s) tuned "
        "already" + (" ; stopped at the time limit" if report.stopped_by_deadline else ""),
        highlight=False,
    )
    if report.failed:
        out.print(
            f"{report.failed} candidate(s) failed to build or run (not counted as trials); "
            f"the first: {report.first_error}",
            highlight=False,
        )
    confirmed = report.confirmation
    if confirmed is not None and confirmed.workloads:
        gain = (
            f"; the records applied take {confirmed.applied_us:.1f} us summed, those measured "
            f"fastest {confirmed.fastest_measured_us:.1f} us (timed in the same rounds; their "
            f"search measured {confirmed.recorded_us:.1f} us)"
            if confirmed.applied_us
            else ""
        )
        out.print(
            f"confirmed: {confirmed.records} record(s) of {confirmed.workloads} workload(s) "
            f"timed again, {confirmed.rounds} rounds, {confirmed.seconds:.1f} s; "
            f"{confirmed.changed} workload(s) now apply another record than the one measured "
            f"fastest{gain}",
            highlight=False,
        )
        if confirmed.failed:
            out.print(
                f"{confirmed.failed} record(s) did not build or run again: no longer applied",
                highlight=False,
            )
