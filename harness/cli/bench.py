"""``edgefarm bench``: compile and measure a model here, without a farm."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import MISSING

from harness.cli.options import apply_partition, apply_tuning, global_options, parse_options
from harness.cli.render import (
    console,
    out,
    print_failures,
    print_partitions,
    profile_table,
    results_table,
)
from harness.cli.usage import usage_errors
from harness.measure.protocol import DEFAULTS, MeasurementSettings

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command()(bench)


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
    warmup: Annotated[int, typer.Option(help="Untimed calls first.")] = DEFAULTS.warmup,
    min_iterations: Annotated[
        int, typer.Option(help="Timed calls, at least.")
    ] = DEFAULTS.min_iterations,
    min_seconds: Annotated[
        float, typer.Option(help="Timed seconds, at least.")
    ] = DEFAULTS.min_seconds,
    max_seconds: Annotated[
        float, typer.Option(help="Stop timing after this.")
    ] = DEFAULTS.max_seconds,
    inputs_npz: Annotated[
        Path | None, typer.Option("--inputs", help="An .npz of input arrays (default: random).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = DEFAULTS.seed,
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
    tuned: Annotated[
        bool | None,
        typer.Option(
            "--tuned/--untuned",
            help="tvm-cpu, and the CPU part of tvm-nnapi/tvm-neuron: apply the device class's "
            "tuning records (edgefarm tune), or not. Default: tuned where records exist.",
        ),
    ] = None,
) -> None:
    """Compile and measure MODEL; print a table; exit 0 only if every measurement succeeded."""
    from harness.bench import BenchPlan, run_bench
    from harness.measure.document import documents_json
    from harness.modelio import parse_input_spec

    with usage_errors():
        specs = [parse_input_spec(text) for text in input or []]
        options = parse_options(option or [])
        apply_partition(options, backend or ["tvm-cpu"], partition)
        apply_tuning(options, backend or ["tvm-cpu"], tuned)
        settings = MeasurementSettings.checked(
            warmup=warmup,
            min_iterations=min_iterations,
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            seed=seed,
            profile=profile,
        )
    plan = BenchPlan(
        model_path=model,
        inputs=specs,
        backends=backend or ["tvm-cpu"],
        devices=device or ["local"],
        protocol=settings.protocol(),
        inputs_npz=inputs_npz,
        seed=settings.seed,
        options=options,
    )
    with console.status("starting", spinner="dots") as status:

        def progress(event: str, message: str) -> None:
            status.update(f"[bold]{event}[/]: {message}")
            if global_options.debug:
                log.info("%s: %s", event, message)

        documents = run_bench(plan, progress)
    out.print(results_table(documents))
    print_partitions(documents)
    for doc in documents:
        if doc.profile is not MISSING and doc.profile:
            out.print(profile_table(doc))
    print_failures(documents)
    if json_path is not None:
        json_path.write_text(documents_json(documents))
        console.print(f"wrote {len(documents)} result(s) to {json_path}", highlight=False)
    raise typer.Exit(0 if documents and all(d.status == "ok" for d in documents) else 1)
