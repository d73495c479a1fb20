"""The ``edgefarm`` command (typer + rich). Entry point: :func:`main`.

Logging is configured here and only here. No traceback reaches the user unless ``--debug``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.errors import EdgefarmError, JobError

app = typer.Typer(
    name="edgefarm",
    help="Benchmark ML models on phones (and this machine) with TVM and onnxruntime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 170)
log = logging.getLogger("harness.cli")

_state: dict[str, bool] = {"debug": False}


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show logs and tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    _state["debug"] = debug
    _setup_logging(debug)
    if version:
        out.print(f"edgefarm {__version__}")
        raise typer.Exit(0)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def results_table(documents: list[dict[str, Any]]) -> Table:
    """The readable summary of result documents."""
    table = Table(title="edgefarm results", show_lines=False)
    for column, justify in [
        ("model", "left"),
        ("device", "left"),
        ("backend", "left"),
        ("status", "left"),
        ("median ms", "right"),
        ("95% CI ms", "right"),
        ("p90 ms", "right"),
        ("cv", "right"),
        ("n", "right"),
        ("load ms", "right"),
        ("first ms", "right"),
        ("RSS MB", "right"),
        ("max err", "right"),
        ("cosine", "right"),
        ("top-1", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for doc in documents:
        lat = doc.get("latency_ms") or {}
        acc = doc.get("accuracy") or {}
        rss = doc.get("peak_rss_kb")
        status = "[green]ok[/]" if doc["status"] == "ok" else "[red]failed[/]"
        ci = lat.get("ci95")
        table.add_row(
            str(doc["model"].get("name")),
            str(doc["device"].get("id")),
            doc["backend"],
            status,
            _fmt(lat.get("median")),
            f"{_fmt(ci[0])}-{_fmt(ci[1])}" if ci else "-",
            _fmt(lat.get("p90")),
            _fmt(lat.get("cv"), 2),
            _fmt(lat.get("n")),
            _fmt(doc.get("load_ms"), 1),
            _fmt(doc.get("first_ms")),
            _fmt(rss / 1024.0 if rss else None, 1),
            _fmt(acc.get("max_abs_err")),
            _fmt(acc.get("cosine"), 6),
            _fmt(acc.get("top1_agree"), 2),
        )
    return table


def print_failures(documents: list[dict[str, Any]]) -> None:
    for doc in documents:
        if doc["status"] != "ok" and doc.get("error"):
            err = doc["error"]
            console.print(
                f"[red]failed[/] {doc['model'].get('name')} / {doc['device'].get('id')} / "
                f"{doc['backend']} at [bold]{err['stage']}[/]: {err['message']}",
                highlight=False,
                soft_wrap=True,
            )


def _parse_options(values: list[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for text in values:
        key, sep, raw = text.partition("=")
        backend, dot, name = key.partition(".")
        if not sep or not dot or not backend or not name:
            raise JobError(
                "compile", f"--option {text!r}: write BACKEND.KEY=VALUE, e.g. ort.threads=1"
            )
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(backend, {})[name] = value
    return options


PARTITION_MODES = ("all", "cost")


def _apply_partition(
    options: dict[str, dict[str, Any]], backends: list[str], mode: str | None
) -> None:
    """``--partition MODE``: the ``partition`` option of every offloading backend given."""
    if mode is None:
        return
    from harness.compile import get_backend
    from harness.compile.backends import ByocBackend

    if mode not in PARTITION_MODES:
        raise JobError("partition", f"--partition {mode!r}: one of {', '.join(PARTITION_MODES)}")
    offloading = [b for b in backends if isinstance(get_backend(b), ByocBackend)]
    if not offloading:
        raise JobError(
            "partition", "--partition applies to offloading backends (tvm-nnapi, tvm-neuron)"
        )
    for name in offloading:
        options.setdefault(name, {})["partition"] = mode


def partition_table(documents: list[dict[str, Any]]) -> Table | None:
    """What each offloading measurement sent to the accelerator; None when there is none."""
    rows = [d for d in documents if d.get("partition")]
    if not rows:
        return None
    table = Table(title="partition")
    for column in (
        "device",
        "backend",
        "mode",
        "subgraphs",
        "ops offloaded",
        "MACs offloaded",
        "boundary KiB",
        "predicted ms",
        "measured ms",
    ):
        table.add_column(
            column, justify="left" if column in ("device", "backend", "mode") else "right"
        )
    for doc in rows:
        p = doc["partition"]
        table.add_row(
            str(doc["device"].get("id")),
            doc["backend"],
            str(p.get("mode")),
            str(p.get("subgraphs")),
            f"{p.get('ops_offloaded')}/{p.get('ops_total')}",
            f"{100.0 * float(p.get('macs_offloaded_share') or 0.0):.0f}%",
            _fmt((p.get("boundary_bytes") or 0) / 1024.0, 1),
            _fmt(p.get("predicted_ms")),
            _fmt(p.get("measured_ms")),
        )
    return table


def print_cpu_ops(documents: list[dict[str, Any]]) -> None:
    """Operators left on the CPU by offloading backends, counted by (operator, reason)."""
    for doc in documents:
        cpu_ops = (doc.get("partition") or {}).get("cpu_ops") or []
        if not cpu_ops:
            continue
        counts: dict[tuple[str, str], int] = {}
        for entry in cpu_ops:
            key = (entry["op"], entry["reason"])
            counts[key] = counts.get(key, 0) + 1
        listed = ", ".join(f"{op} x{n} ({reason})" for (op, reason), n in sorted(counts.items()))
        out.print(
            f"{doc['backend']} on {doc['device'].get('id')} kept on the CPU: {listed}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="An ONNX, TFLite or PyTorch .pt2 model file.")],
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Input spec NAME:1x3x224x224[:float32]; repeatable."),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", help="tvm-cpu, ort; repeatable. Default: tvm-cpu."),
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option("--device", "-d", help="local, tcp:HOST:PORT, usb:SERIAL; repeatable."),
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls first.")] = 5,
    min_iterations: Annotated[int, typer.Option(min=1, help="Timed calls, at least.")] = 20,
    min_seconds: Annotated[float, typer.Option(min=0.0, help="Timed seconds, at least.")] = 1.0,
    max_seconds: Annotated[float, typer.Option(min=0.001, help="Stop timing after this.")] = 60.0,
    inputs_npz: Annotated[
        Path | None, typer.Option("--inputs", help="An .npz of input arrays (default: random).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Backend option BACKEND.KEY=VALUE; repeatable."),
    ] = None,
    profile: Annotated[bool, typer.Option(help="Per-operator times (TVM backends).")] = False,
    partition: Annotated[
        str | None,
        typer.Option(
            help="tvm-nnapi/tvm-neuron: 'all' offloads everything supported; 'cost' keeps on "
            "the CPU what the device class's measured costs say the accelerator loses."
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the result documents here.")
    ] = None,
) -> None:
    """Compile and measure MODEL; print a table; exit 0 only if every measurement succeeded."""
    from harness.bench import BenchPlan, Protocol, run_bench
    from harness.measure.protocol import ProtocolLimitError
    from harness.modelio import parse_input_spec

    protocol = Protocol(
        warmup=warmup,
        min_iterations=min_iterations,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        profile=profile,
    )
    try:
        specs = [parse_input_spec(text) for text in input or []]
        options = _parse_options(option or [])
        _apply_partition(options, backend or ["tvm-cpu"], partition)
        protocol.check()
    except JobError as exc:
        console.print(f"[red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    except ProtocolLimitError as exc:
        console.print(f"[red]error:[/] --{exc.message.replace('_', '-')}", highlight=False)
        raise typer.Exit(2) from None
    plan = BenchPlan(
        model_path=model,
        inputs=specs,
        backends=backend or ["tvm-cpu"],
        devices=device or ["local"],
        protocol=protocol,
        inputs_npz=inputs_npz,
        seed=seed,
        options=options,
    )
    with console.status("starting", spinner="dots") as status:

        def progress(event: str, message: str) -> None:
            status.update(f"[bold]{event}[/]: {message}")
            if _state["debug"]:
                log.info("%s: %s", event, message)

        documents = run_bench(plan, progress)
    out.print(results_table(documents))
    parts = partition_table(documents)
    if parts is not None:
        out.print(parts)
        print_cpu_ops(documents)
    for doc in documents:
        if doc.get("profile"):
            out.print(profile_table(doc))
    print_failures(documents)
    if json_path is not None:
        json_path.write_text(json.dumps(documents, indent=2) + "\n")
        console.print(f"wrote {len(documents)} result(s) to {json_path}", highlight=False)
    raise typer.Exit(0 if documents and all(d["status"] == "ok" for d in documents) else 1)


def profile_table(doc: dict[str, Any], limit: int = 20) -> Table:
    table = Table(title=f"per-operator profile: {doc['backend']} on {doc['device'].get('id')}")
    for column in ("operator", "calls", "total ms", "mean ms"):
        table.add_column(column, justify="left" if column == "operator" else "right")
    for entry in doc["profile"][:limit]:
        table.add_row(
            entry["name"], str(entry["calls"]), _fmt(entry["total_ms"]), _fmt(entry["mean_ms"])
        )
    return table


@app.command()
def examples(
    names: Annotated[
        list[str] | None, typer.Argument(help="resnet8, ds-cnn, mobilenet-v1-0.25, autoencoder")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory.")] = Path("."),
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Write the MLPerf Tiny example models (ONNX) and print their paths."""
    from harness.examples import EXAMPLES, write_example

    chosen = names or list(EXAMPLES)
    unknown = [n for n in chosen if n not in EXAMPLES]
    if unknown:
        console.print(
            f"[red]error:[/] unknown example(s) {', '.join(unknown)}; known: {', '.join(EXAMPLES)}",
            highlight=False,
        )
        raise typer.Exit(2)
    output.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        out.print(str(write_example(name, output, seed=seed)), highlight=False)


def _settings_from(bench: dict[str, Any], inputs: list[str], options: list[str]) -> dict[str, Any]:
    return {"inputs": inputs, **bench, "options": _parse_options(options)}


def _submit_and_wait(
    client: Any,
    model_path: Path,
    *,
    devices: dict[str, Any],
    backends: list[str],
    settings: dict[str, Any],
    status: Any,
) -> list[dict[str, Any]]:
    from harness.client import job_documents

    model = client.upload_model(model_path)
    job = client.submit(model_id=model["id"], devices=devices, backends=backends, settings=settings)
    status.update(f"job {job['id']}: {len(job['runs'])} run(s) queued")

    def on_update(current: dict[str, Any]) -> None:
        counts: dict[str, int] = {}
        for run in current["runs"]:
            counts[run["status"]] = counts.get(run["status"], 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        status.update(f"job {current['id']} ({model['name']}): {summary}")

    return job_documents(client.wait(job["id"], on_update=on_update))


@app.command()
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
    warmup: Annotated[int, typer.Option(min=0)] = 5,
    min_iterations: Annotated[int, typer.Option(min=1)] = 20,
    min_seconds: Annotated[float, typer.Option(min=0.0)] = 1.0,
    max_seconds: Annotated[float, typer.Option(min=0.001)] = 60.0,
    seed: Annotated[int, typer.Option()] = 0,
    option: Annotated[list[str] | None, typer.Option("--option", "-o")] = None,
    profile: Annotated[bool, typer.Option(help="Per-operator times.")] = False,
    partition: Annotated[
        str | None, typer.Option(help="tvm-nnapi/tvm-neuron: all | cost (see edgefarm bench).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the results and print them.")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write results (--wait).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="The farm (default: edgefarm up's).")] = None,
    token: Annotated[str | None, typer.Option(help="API token (default: edgefarm up's).")] = None,
) -> None:
    """Submit MODEL to a running farm over HTTP; with --wait, print the results."""
    from harness.client import FarmClient, parse_selector

    try:
        selector = parse_selector(device_selector)
        settings = _settings_from(
            {
                "warmup": warmup,
                "min_iterations": min_iterations,
                "min_seconds": min_seconds,
                "max_seconds": max_seconds,
                "seed": seed,
                "profile": profile,
            },
            input or [],
            option or [],
        )
        _apply_partition(settings["options"], backend or ["tvm-cpu"], partition)
    except JobError as exc:
        console.print(f"[red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from None
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
    parts = partition_table(documents)
    if parts is not None:
        out.print(parts)
        print_cpu_ops(documents)
    print_failures(documents)
    if json_path is not None:
        json_path.write_text(json.dumps(documents, indent=2) + "\n")
    raise typer.Exit(0 if documents and all(d["status"] == "ok" for d in documents) else 1)


@app.command()
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
    beat = health.get("beat") or {}
    colour = "green" if code == 200 else "red"
    out.print(
        f"[{colour}]{health.get('status', '?')}[/] at {client.url}: database "
        f"{health.get('database')}, broker {health.get('broker')}, beat "
        + (
            f"ticked {beat['age_s']:.0f} s ago" + ("" if beat.get("alive") else " (dead)")
            if beat.get("age_s") is not None
            else "never ticked"
        )
        + f", {health.get('runs_in_flight', 0)} run(s) in flight",
        highlight=False,
    )
    workers = Table(title="workers", title_justify="left")
    for column in ("name", "queues", "status", "alive", "heartbeat", "reason"):
        workers.add_column(column)
    for w in health.get("workers", []):
        workers.add_row(
            w["name"],
            ", ".join(w["queues"]),
            w["status"],
            "yes" if w["alive"] else "[red]no[/]",
            f"{w['heartbeat_age_s']:.0f} s ago",
            w.get("reason") or "",
        )
    out.print(workers)
    table = Table(title="devices", title_justify="left")
    for column in ("id", "address", "model", "health", "state", "worker", "offered"):
        table.add_column(column)
    for d in devices:
        live = d.get("liveness") or {}
        table.add_row(
            str(d["id"]),
            d["address"],
            d.get("model_name", ""),
            d["health"] + (f" ({d['health_reason']})" if d.get("health_reason") else ""),
            d["state"],
            "alive" if live.get("alive") else f"[red]{live.get('reason') or 'none'}[/]",
            "yes" if live.get("offered") else "no",
        )
    out.print(table)
    for problem in health.get("problems", []):
        console.print(f"[red]problem:[/] {problem}", highlight=False)
    raise typer.Exit(0 if code == 200 else 1)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    host: Annotated[str, typer.Option(help="API address.")] = "127.0.0.1",
    phones: Annotated[int, typer.Option(min=0, max=16, help="Emulated phones.")] = 2,
) -> None:
    """Start the embedded farm: API, a worker, emulated phones; Ctrl-C stops it."""
    from harness.client import token_file
    from harness.embedded import EmbeddedFarm, profiles_for

    farm = EmbeddedFarm(port=port, host=host, profiles=profiles_for(phones))
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


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    example: Annotated[str, typer.Option(help="Which example model.")] = "resnet8",
    min_seconds: Annotated[float, typer.Option(min=0.0, help="Timed seconds per run.")] = 0.5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    stay: Annotated[bool, typer.Option(help="Keep the farm up afterwards.")] = True,
) -> None:
    """Start the embedded farm, benchmark an example model on every device with tvm-cpu and
    ort, print the results, and keep the farm up."""
    from harness.client import FarmClient
    from harness.embedded import EmbeddedFarm
    from harness.examples import EXAMPLES, write_example

    if example not in EXAMPLES:
        console.print(
            f"[red]error:[/] unknown example {example!r}; known: {', '.join(EXAMPLES)}",
            highlight=False,
        )
        raise typer.Exit(2)
    farm = EmbeddedFarm(port=port)
    documents: list[dict[str, Any]] = []
    try:
        with console.status("starting the farm", spinner="dots") as status:
            farm.start()
            farm.wait_ready()
            directory = get_settings_home() / "examples"
            directory.mkdir(parents=True, exist_ok=True)
            path = write_example(example, directory)
            client = FarmClient(farm.url)
            bench = {"warmup": 5, "min_iterations": 20, "min_seconds": min_seconds}
            # tvm-cpu on every device; the ort baseline where it can run (the worker host:
            # a phone has no Python, see README).
            documents += _submit_and_wait(
                client,
                path,
                devices={"all": True},
                backends=["tvm-cpu"],
                settings={**bench, "inputs": []},
                status=status,
            )
            local = [d["id"] for d in client.devices() if d.get("address") == "local"]
            if local:
                documents += _submit_and_wait(
                    client,
                    path,
                    devices={"ids": local},
                    backends=["ort"],
                    settings={**bench, "inputs": []},
                    status=status,
                )
            client.close()
        out.print(results_table(documents))
        print_failures(documents)
        if json_path is not None:
            json_path.write_text(json.dumps(documents, indent=2) + "\n")
        if stay:
            out.print(
                f"the farm stays up at [bold]{farm.url}[/]; Ctrl-C stops it.", highlight=False
            )
            farm.serve_forever()
    finally:
        farm.stop()
    raise typer.Exit(0 if documents and all(d["status"] == "ok" for d in documents) else 1)


def get_settings_home() -> Path:
    from harness.config import get_settings

    return get_settings().home


@app.command()
def devices(
    device: Annotated[
        list[str] | None,
        typer.Option(
            "--device", "-d", help="Address; repeatable. Default: EDGEFARM_DEVICES + local."
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the listing here.")
    ] = None,
) -> None:
    """List devices with their facts, health and thermal state."""
    from harness.config import get_settings
    from harness.devices import open_device
    from harness.devices.deploy import runtime_bundle

    addresses = device or [*get_settings().devices, "local"]
    rows: list[dict[str, Any]] = []
    with console.status("reading devices", spinner="dots"):
        for address in addresses:
            row: dict[str, Any] = {"id": address}
            try:
                dev = open_device(address)
            except EdgefarmError as exc:
                row["health"] = {"ok": False, "problem": exc.message}
                rows.append(row)
                continue
            try:
                facts = dev.facts()
                row["facts"] = facts.to_dict()
                bundle_hash = None
                try:
                    bundle_hash = runtime_bundle(facts.target).hash
                except EdgefarmError as exc:
                    log.info("no runtime bundle for %s: %s", facts.target, exc)
                row["health"] = device_health(dev, bundle_hash)
                row["state"] = dev.state()
            except EdgefarmError as exc:
                row["health"] = {"ok": False, "problem": exc.message}
            finally:
                dev.close()
            rows.append(row)
    table = Table(title="edgefarm devices")
    for column in (
        "device",
        "model",
        "SoC",
        "ABI",
        "Android",
        "SDK",
        "NNAPI FL",
        "target",
        "health",
        "free GB",
        "max °C",
    ):
        table.add_column(column)
    for row in rows:
        facts = row.get("facts", {})
        health = row.get("health", {})
        free = health.get("free_bytes")
        state = row.get("state", {})
        table.add_row(
            row["id"],
            str(facts.get("model", "-")),
            str(facts.get("soc", "-")),
            str(facts.get("abi", "-")),
            str(facts.get("android_release") or "-"),
            _fmt(facts.get("sdk_level")),
            _fmt(facts.get("nnapi_feature_level")),
            str(facts.get("target", "-")),
            "[green]good[/]" if health.get("ok") else f"[red]bad[/] {health.get('problem') or ''}",
            _fmt(free / 1e9 if free else None, 1),
            _fmt(state.get("max_temp_c"), 1),
        )
    out.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2) + "\n")
    raise typer.Exit(0 if all(r.get("health", {}).get("ok") for r in rows) else 1)


def device_health(dev: Any, bundle_hash: str | None) -> dict[str, Any]:
    """Health of any device (see ``Device.health``)."""
    result: dict[str, Any] = dev.health(bundle_hash=bundle_hash)
    return result


@app.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
def worker(ctx: typer.Context) -> None:
    """Run a farm worker: register this host's phones, consume their queues (and compile).
    Options: see `edgefarm worker --help`."""
    import os

    # harness imports no celery: the worker is its own program (workers/cli.py), exec'd with
    # the arguments as given, so its options are defined in one place.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "workers", "worker", *ctx.args])


emulator_app = typer.Typer(
    help="The emulated phone: an ADB daemon standing in for a phone.", no_args_is_help=True
)
app.add_typer(emulator_app, name="emulator")


@emulator_app.command("start")
def emulator_start(
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 5555,
    profile: Annotated[str, typer.Option(help="dimensity-9200, snapdragon-8-gen-2, pixel-3a.")] = (
        "dimensity-9200"
    ),
    root: Annotated[Path | None, typer.Option(help="Sandbox directory (default: temporary).")] = (
        None
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    refuse_new_keys: Annotated[
        bool, typer.Option(help="Refuse keys not authorized before (like a locked phone).")
    ] = False,
    isolation: Annotated[
        str,
        typer.Option(
            help="namespace: confine commands (refuse to start where the kernel cannot); "
            "auto: confine where possible, else rewrite; rewrite: NOT confined."
        ),
    ] = "namespace",
) -> None:
    """Run one emulated phone in the foreground until Ctrl-C."""
    from harness.devices.emulator import PROFILES, serve

    if profile not in PROFILES:
        console.print(
            f"[red]error:[/] unknown profile {profile!r}; known: {', '.join(sorted(PROFILES))}",
            highlight=False,
        )
        raise typer.Exit(2)
    if not _state["debug"]:
        logging.getLogger("harness.devices.emulator").setLevel(logging.INFO)
        logging.getLogger().setLevel(logging.INFO)
    if isolation not in ("namespace", "auto", "rewrite"):
        console.print(
            f"[red]error:[/] --isolation is namespace, auto or rewrite, not {isolation!r}",
            highlight=False,
        )
        raise typer.Exit(2)
    serve(
        port=port,
        profile=profile,
        root=root,
        accept_new_keys=not refuse_new_keys,
        host=host,
        isolation=isolation,  # type: ignore[arg-type]
    )


token_app = typer.Typer(
    help="API tokens for the farm's API (stored hashed in the farm's database).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


def _farm_session() -> Any:
    """A session on the farm's database (EDGEFARM_DATABASE_URL), committed on success."""
    from harness.db import make_engine, make_session_factory, session_scope

    return session_scope(make_session_factory(make_engine()))


@token_app.command("create")
def token_create(name: Annotated[str, typer.Argument(help="Who or what uses the token.")]) -> None:
    """Create a token and print it; it is shown this once only."""
    from harness.farm.tokens import create_token

    with _farm_session() as session:
        token = create_token(name, session=session)
    out.print(token, highlight=False, soft_wrap=True)
    console.print(f"token {name!r} created; it is not shown again", highlight=False)


@token_app.command("list")
def token_list() -> None:
    """List tokens by name (never the tokens themselves)."""
    from harness.farm.tokens import list_tokens

    with _farm_session() as session:
        rows = [(t.name, t.created_at, t.revoked_at) for t in list_tokens(session=session)]
    table = Table(title="edgefarm API tokens")
    for column in ("name", "created", "revoked"):
        table.add_column(column)
    for name, created, revoked in rows:
        table.add_row(
            name,
            f"{created:%Y-%m-%d %H:%M:%S}",
            f"{revoked:%Y-%m-%d %H:%M:%S}" if revoked else "-",
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke the token(s) called NAME."""
    from harness.farm.tokens import revoke_token

    with _farm_session() as session:
        count = revoke_token(name, session=session)
    console.print(f"revoked {count} token(s) named {name!r}", highlight=False)


costs_app = typer.Typer(
    help="Per-device-class costs that --partition cost measured (calibration).",
    no_args_is_help=True,
)
app.add_typer(costs_app, name="costs")


def _cost_store(farm: bool) -> Any:
    from harness.byoc.calibration import CostStore

    if farm:
        from harness.db import make_engine

        return CostStore(make_engine())
    return CostStore.local()


FarmFlag = Annotated[
    bool,
    typer.Option(
        "--farm", help="The farm's database (EDGEFARM_DATABASE_URL), not edgefarm bench's store."
    ),
]


@costs_app.command("list")
def costs_list(
    device_class: Annotated[
        str | None, typer.Option("--device-class", help="Only this device class.")
    ] = None,
    farm: FarmFlag = False,
) -> None:
    """Stored times: per device class, where they ran (cpu or the accelerator's settings)."""
    rows = _cost_store(farm).rows(device_class)
    table = Table(title=f"edgefarm costs ({len(rows)})")
    for column in ("device class", "variant", "what", "median ms", "n", "device", "measured"):
        table.add_column(column, justify="right" if column in ("median ms", "n") else "left")
    for row in rows:
        table.add_row(
            row.device_class,
            row.variant,
            row.description or row.signature,
            _fmt(row.median_ms),
            str(row.samples),
            row.device,
            f"{row.measured_at:%Y-%m-%d %H:%M}",
        )
    out.print(table)


@costs_app.command("forget")
def costs_forget(
    device_class: Annotated[
        str | None, typer.Option("--device-class", help="Only this device class.")
    ] = None,
    farm: FarmFlag = False,
) -> None:
    """Delete stored times; the next cost-guided run measures again."""
    count = _cost_store(farm).forget(device_class)
    console.print(f"forgot {count} stored time(s)", highlight=False)


def main() -> None:
    """Console-script entry point: no raw traceback reaches the user."""
    try:
        app()
    except EdgefarmError as exc:
        console.print(f"[red]error:[/] {exc.message}", highlight=False)
        if _state["debug"]:
            console.print_exception()
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # our defect; say so in one line
        if _state["debug"]:
            console.print_exception()
        console.print(
            f"[red]internal error[/] ({type(exc).__name__}): {exc} — rerun with --debug for the "
            "traceback and report it",
            highlight=False,
        )
        sys.exit(70)


if __name__ == "__main__":
    main()
