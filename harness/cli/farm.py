"""Commands that talk to a farm: ``submit`` and ``status`` over HTTP; ``up`` and ``demo``
start the embedded one."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harness.cli.options import apply_partition, parse_options
from harness.cli.render import (
    console,
    farm_devices_table,
    health_line,
    out,
    print_failures,
    print_partitions,
    results_table,
    tunings_table,
    workers_table,
)
from harness.cli.usage import usage_errors
from harness.measure.protocol import (
    DEFAULTS,
    MeasurementRequest,
    MeasurementSettings,
    ProtocolLimitError,
)

if TYPE_CHECKING:
    from rich.status import Status

    from harness.client import FarmClient, JobJson, TuningJson
    from harness.farm.selection import SelectorJson
    from harness.measure.document import ResultDocument


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(status)
    app.command()(up)
    app.command()(demo)


def _submit_and_wait(
    client: FarmClient,
    model_path: Path,
    *,
    devices: SelectorJson,
    backends: list[str],
    settings: MeasurementRequest | MeasurementSettings,
    status: Status,
) -> list[ResultDocument]:
    from harness.client import job_documents

    model = client.upload_model(model_path)
    job = client.submit(model_id=model["id"], devices=devices, backends=backends, settings=settings)
    status.update(f"job {job['id']}: {len(job['runs'])} run(s) queued")

    def on_update(current: JobJson) -> None:
        counts: dict[str, int] = {}
        for run in current["runs"]:
            counts[run["status"]] = counts.get(run["status"], 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        status.update(f"job {current['id']} ({model['name']}): {summary}")

    return job_documents(client.wait(job["id"], on_update=on_update))


def submit(
    model: Annotated[Path, typer.Argument(help="An ONNX, TFLite or PyTorch .pt2 model file.")],
    input: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="NAME:1x3x224x224[:float32].")
    ] = None,
    device_selector: Annotated[
        str,
        typer.Option(
            "--device-selector", "-s", help="all | pool=NAME | soc=NAME | model=TEXT | ids=1,2"
        ),
    ] = "all",
    backend: Annotated[list[str] | None, typer.Option("--backend", "-b")] = None,
    warmup: Annotated[int, typer.Option()] = DEFAULTS.warmup,
    min_iterations: Annotated[int, typer.Option()] = DEFAULTS.min_iterations,
    min_seconds: Annotated[float, typer.Option()] = DEFAULTS.min_seconds,
    max_seconds: Annotated[float, typer.Option()] = DEFAULTS.max_seconds,
    seed: Annotated[int, typer.Option()] = DEFAULTS.seed,
    option: Annotated[list[str] | None, typer.Option("--option", "-o")] = None,
    profile: Annotated[bool, typer.Option(help="Per-operator times.")] = False,
    partition: Annotated[
        str | None, typer.Option(help="tvm-nnapi/tvm-neuron: all | cost (see edgefarm bench).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the results and print them.")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write results (--wait).")
    ] = None,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Tune MODEL (MetaSchedule; tvm-cpu, or with -b tvm-nnapi/tvm-neuron the CPU part "
            "of their partition) for the selected devices' classes instead of benchmarking it; "
            "candidates are measured on each class's idle phones. With --wait, Ctrl-C cancels "
            "the tunings (their records are kept).",
        ),
    ] = False,
    trials: Annotated[
        int | None,
        typer.Option(help="--tune: trials per task, counting the farm's records (default 32)."),
    ] = None,
    minutes: Annotated[float | None, typer.Option(help="--tune: a time budget instead.")] = None,
    url: Annotated[str | None, typer.Option(help="The farm (default: edgefarm up's).")] = None,
    token: Annotated[str | None, typer.Option(help="API token (default: edgefarm up's).")] = None,
) -> None:
    """Submit MODEL to a running farm over HTTP (a benchmark, or with --tune a tuning); with
    --wait, print the results."""
    from harness.client import FarmClient, parse_selector
    from harness.measure.document import documents_json

    if tune:
        _submit_tuning(
            model,
            selector_text=device_selector,
            inputs=input or [],
            backends=backend,
            options=option or [],
            trials=trials,
            minutes=minutes,
            wait=wait,
            url=url,
            token=token,
        )
        return
    if trials is not None or minutes is not None:
        console.print("[red]error:[/] --trials and --minutes go with --tune", highlight=False)
        raise typer.Exit(2)
    with usage_errors():
        selector = parse_selector(device_selector)
        options = parse_options(option or [])
        apply_partition(options, backend or ["tvm-cpu"], partition)
        settings = MeasurementSettings.checked(
            inputs=input or [],
            warmup=warmup,
            min_iterations=min_iterations,
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            seed=seed,
            options=options,
            profile=profile,
        )
    if not model.is_file():
        console.print(f"[red]error:[/] model file {model} does not exist", highlight=False)
        raise typer.Exit(2)
    client = FarmClient(url, token)
    try:
        if not wait:
            uploaded = client.upload_model(model)
            job = client.submit(
                model_id=uploaded["id"],
                devices=selector,
                backends=backend or ["tvm-cpu"],
                settings=settings,
            )
            out.print(
                f"job {job['id']}: {len(job['runs'])} run(s) queued at {client.url}",
                highlight=False,
            )
            return
        with console.status("submitting", spinner="dots") as status:
            documents = _submit_and_wait(
                client,
                model,
                devices=selector,
                backends=backend or ["tvm-cpu"],
                settings=settings,
                status=status,
            )
    finally:
        client.close()
    out.print(results_table(documents))
    print_partitions(documents)
    print_failures(documents)
    if json_path is not None:
        json_path.write_text(documents_json(documents))
    raise typer.Exit(0 if documents and all(d.status == "ok" for d in documents) else 1)


def _submit_tuning(
    model: Path,
    *,
    selector_text: str,
    inputs: list[str],
    backends: list[str] | None,
    options: list[str],
    trials: int | None,
    minutes: float | None,
    wait: bool,
    url: str | None,
    token: str | None,
) -> None:
    """``edgefarm submit --tune``: one farm tuning per device class of the selected devices;
    with --wait, their reports. Exit status 0 when every tuning is done. ``-o
    BACKEND.threads=N``: TVM's thread pool while timing (the runs' option)."""
    from harness.backends.tvm_cpu import split_threads
    from harness.cli.options import parse_options
    from harness.client import FarmClient, parse_selector
    from harness.errors import JobError

    with usage_errors():
        selector = parse_selector(selector_text)
        backend = _tuned_backend(backends)
        given = parse_options(options)
        threads, rest = split_threads(given.pop(backend, None))
        if rest or given:
            other = sorted({f"{b}.{k}" for b, o in given.items() for k in o} | set(rest or {}))
            raise JobError(
                "compile",
                f"--tune takes only {backend}.threads from --option, not {', '.join(other)} "
                "(a farm tuning partitions with the backend's defaults)",
            )
        if trials is not None and minutes is not None:
            raise JobError("compile", "give --trials or --minutes, not both")
        if trials is not None and trials < 1:
            raise JobError("compile", f"--trials must be at least 1, not {trials}")
        if minutes is not None and not minutes > 0:
            raise JobError("compile", f"--minutes must be more than 0, not {minutes}")
    if not model.is_file():
        console.print(f"[red]error:[/] model file {model} does not exist", highlight=False)
        raise typer.Exit(2)
    client = FarmClient(url, token)
    try:
        uploaded = client.upload_model(model)
        tunings = client.submit_tuning(
            model_id=uploaded["id"],
            devices=selector,
            trials=trials,
            minutes=minutes,
            inputs=inputs,
            backend=backend,
            threads=threads,
        )
        # Ctrl-C while it waits cancels what it waits for, as it stops `edgefarm tune`. It is
        # a flag the polling loop reads, not an exception that could land in the middle of
        # the status line's terminal set-up.
        interrupted = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) if wait else None
        try:
            for t in tunings:
                out.print(
                    f"tuning {t['id']}: {uploaded['name']} for {t['device_class']} "
                    f"({t['backend']}) queued at {client.url}",
                    highlight=False,
                )
            if not wait:
                return
            tunings = _wait_tunings(client, [t["id"] for t in tunings], interrupted)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if interrupted.is_set():
            # Each tuning ends after its current batch, its records kept for a later one.
            tunings = [client.cancel_tuning(t["id"]) for t in tunings]
            out.print(tunings_table(tunings))
            for t in tunings:
                out.print(
                    f"tuning {t['id']}: {t['status']}; its records are kept, and a later tuning "
                    "of the class continues from them",
                    highlight=False,
                )
            raise typer.Exit(130)
    finally:
        client.close()
    out.print(tunings_table(tunings))
    for t in tunings:
        if t["error_message"]:
            console.print(f"[red]tuning {t['id']}:[/] {t['error_message']}", highlight=False)
    raise typer.Exit(0 if all(t["status"] == "done" for t in tunings) else 1)


def _wait_tunings(client: FarmClient, ids: list[int], stop: threading.Event) -> list[TuningJson]:
    """The tunings once all have ended (or ``stop`` is set), their progress on a status line
    meanwhile."""
    with console.status("tuning", spinner="dots") as status:

        def on_update(current: list[TuningJson]) -> None:
            status.update(
                "; ".join(
                    f"tuning {t['id']}: {t['status']}, {t['report'].get('saved', 0)} saved"
                    for t in current
                )
            )

        return client.wait_tunings(ids, on_update=on_update, stop=stop)


def _tuned_backend(backends: list[str] | None) -> str:
    """The one backend ``submit --tune`` tunes (tvm-cpu by default): tvm-cpu the whole model,
    a BYOC backend what its partition leaves on the CPU."""
    from harness.errors import JobError
    from harness.farm.tunings import TUNABLE_BACKENDS

    chosen = backends or ["tvm-cpu"]
    if len(chosen) != 1:
        raise JobError("compile", "--tune tunes one backend at a time; give one --backend")
    if chosen[0] not in TUNABLE_BACKENDS:
        raise JobError(
            "compile",
            f"backend {chosen[0]!r} cannot be tuned; tunable: {', '.join(TUNABLE_BACKENDS)}",
        )
    return chosen[0]


def status(
    url: Annotated[str | None, typer.Option(help="The farm (default: edgefarm up's).")] = None,
    token: Annotated[str | None, typer.Option(help="API token (default: edgefarm up's).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write /healthz here.")] = None,
) -> None:
    """The farm's health: database, broker, beat, each worker and device, starved queues.
    Exit status 0 when the farm can make progress, 1 when it cannot."""
    from harness.client import FarmClient

    client = FarmClient(url, token)
    try:
        code, health = client.health()
        devices = client.devices() if health.get("database") == "ok" else []
    finally:
        client.close()
    if json_path is not None:
        json_path.write_text(json.dumps({"health": health, "devices": devices}, indent=2) + "\n")
    out.print(health_line(code, health, client.url), highlight=False)
    out.print(workers_table(health.get("workers", [])))
    out.print(farm_devices_table(devices))
    for problem in health.get("problems", []):
        console.print(f"[red]problem:[/] {problem}", highlight=False)
    raise typer.Exit(0 if code == 200 else 1)


def _want_arm64(asked: bool | None) -> bool:
    """Whether the farm gets the arm64 emulated phone: when asked for (an error naming the
    packages if this machine cannot have one), else when the tools are there (a line saying
    why not otherwise)."""
    from harness.embedded import arm64_missing

    if asked is False:
        return False
    missing = arm64_missing()
    if not missing:
        return True
    if asked:
        console.print(
            f"[red]error:[/] the arm64 emulated phone needs {'; '.join(missing)}",
            highlight=False,
        )
        raise typer.Exit(2)
    console.print(
        f"no arm64 emulated phone: this machine lacks {'; '.join(missing)} "
        "(apt-get install qemu-user g++-aarch64-linux-gnu adds it)",
        highlight=False,
    )
    return False


def up(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    host: Annotated[str, typer.Option(help="API address.")] = "127.0.0.1",
    phones: Annotated[int, typer.Option(min=0, max=16, help="Emulated phones.")] = 2,
    arm64: Annotated[
        bool | None,
        typer.Option(
            "--arm64/--no-arm64",
            help="One more emulated phone that runs aarch64 binaries under qemu-user "
            "(default: when qemu-user and the aarch64 cross compiler are installed).",
        ),
    ] = None,
) -> None:
    """Start the embedded farm: API, a worker, emulated phones; Ctrl-C stops it."""
    from harness.client import token_file
    from harness.embedded import EmbeddedFarm, profiles_for

    farm = EmbeddedFarm(
        port=port, host=host, profiles=profiles_for(phones), arm64=_want_arm64(arm64)
    )
    try:
        with console.status("starting the farm", spinner="dots"):
            farm.start()
            farm.wait_ready()
        out.print(
            f"edgefarm is up at [bold]{farm.url}[/] (API docs {farm.url}/docs); "
            f"token in {token_file()}; devices: "
            f"{', '.join(f'tcp:127.0.0.1:{p.port}' for p in farm.phones)}, local. "
            "Ctrl-C stops it.",
            highlight=False,
        )
        farm.serve_forever()
    finally:
        farm.stop()


def _demo_tuning(
    client: FarmClient, path: Path, local: list[int], trials: int, threads: int, status: Status
) -> list[TuningJson]:
    """The demo's tuning of the example for this machine's class, through the farm (as
    ``edgefarm submit --tune``), timed on ``threads``: the first demo measures ``trials`` per
    task, a later one finds them in the farm's records and measures nothing. A tuning that
    fails is shown; the benchmark then runs untuned."""
    model = client.upload_model(path)
    tunings = client.submit_tuning(
        model_id=model["id"], devices={"ids": local}, trials=trials, threads=threads
    )

    def on_update(current: list[TuningJson]) -> None:
        parts = []
        for t in current:
            report = t["report"] or {}
            parts.append(
                f"tuning {model['name']} for {t['device_class']} ({trials} trials per task; "
                f"records kept for the next run): {t['status']}, "
                f"{report.get('saved', 0)} record(s) saved"
            )
        status.update("; ".join(parts))

    return client.wait_tunings([t["id"] for t in tunings], on_update=on_update)


def demo(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    example: Annotated[str, typer.Option(help="Which example model.")] = "resnet8",
    min_seconds: Annotated[float, typer.Option(help="Timed seconds per run.")] = 0.5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    stay: Annotated[bool, typer.Option(help="Keep the farm up afterwards.")] = True,
    tune_trials: Annotated[
        int,
        typer.Option(
            min=0,
            help="Tune the model for this machine's class first (trials per task, counting "
            "the records the farm has: a second demo tunes nothing); 0: untuned.",
        ),
    ] = 8,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Threads for tvm-cpu (TVM's pool, on every device) and ort alike, and for "
            "the tuning's timing (default: this machine's physical cores).",
        ),
    ] = None,
) -> None:
    """Start the embedded farm, tune the example model for this machine, benchmark it on every
    device with tvm-cpu and ort, print the results, and keep the farm up. tvm-cpu and ort run
    on the same threads (each backend's own default differs: see README, "Threads")."""
    from harness.client import FarmClient
    from harness.config import get_settings
    from harness.devices.base import DeviceFacts
    from harness.embedded import EmbeddedFarm
    from harness.examples import EXAMPLES, write_example
    from harness.measure.document import documents_json

    if example not in EXAMPLES:
        console.print(
            f"[red]error:[/] unknown example {example!r}; known: {', '.join(EXAMPLES)}",
            highlight=False,
        )
        raise typer.Exit(2)
    if threads is None:
        import psutil

        threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        # The same threads for both (a job's options name only the backends it runs).
        bench = MeasurementRequest.checked(
            min_seconds=min_seconds, options={"tvm-cpu": {"threads": threads}}
        )
        bench_ort = MeasurementRequest.checked(
            min_seconds=min_seconds, options={"ort": {"threads": threads}}
        )
    except ProtocolLimitError as exc:
        console.print(f"[red]error:[/] --{exc.message.replace('_', '-')}", highlight=False)
        raise typer.Exit(2) from None
    farm = EmbeddedFarm(port=port, arm64=_want_arm64(None))
    documents: list[ResultDocument] = []
    tunings: list[TuningJson] = []
    try:
        with console.status("starting the farm", spinner="dots") as status:
            farm.start()
            farm.wait_ready()
            directory = get_settings().home / "examples"
            directory.mkdir(parents=True, exist_ok=True)
            path = write_example(example, directory)
            client = FarmClient(farm.url)
            local = [
                d["id"]
                for d in client.devices()
                if DeviceFacts.from_dict(d.get("facts") or {}).runs_host_python
            ]
            if local and tune_trials > 0:
                tunings = _demo_tuning(client, path, local, tune_trials, threads, status)
        if tunings:
            out.print(tunings_table(tunings))
        with console.status("benchmarking", spinner="dots") as status:
            # tvm-cpu on every device (tuned where the farm has records for its class); the
            # ort baseline where it can run (the worker host: a phone has no Python, see
            # README).
            documents += _submit_and_wait(
                client,
                path,
                devices={"all": True},
                backends=["tvm-cpu"],
                settings=bench,
                status=status,
            )
            if local:
                documents += _submit_and_wait(
                    client,
                    path,
                    devices={"ids": local},
                    backends=["ort"],
                    settings=bench_ort,
                    status=status,
                )
            client.close()
        out.print(results_table(documents))
        print_failures(documents)
        if json_path is not None:
            json_path.write_text(documents_json(documents))
        # The last line: where to click on to the jobs just run, their histograms, partition
        # reports and histories.
        if stay:
            out.print(
                f"the farm stays up; Ctrl-C stops it. Dashboard: [bold]{farm.url}/[/]",
                highlight=False,
            )
            farm.serve_forever()
        else:
            out.print(
                f"Dashboard (while `edgefarm up` runs): [bold]{farm.url}/[/]", highlight=False
            )
    finally:
        farm.stop()
    raise typer.Exit(0 if documents and all(d.status == "ok" for d in documents) else 1)
