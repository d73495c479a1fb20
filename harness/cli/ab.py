"""``edgefarm ab``: is B faster or slower than A on this device? An interleaved A/B experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import parse_options
from harness.cli.render import console, out
from harness.cli.usage import usage_errors
from harness.measure.protocol import MeasurementSettings
from harness.regression import MAX_BLOCKS


def register(app: typer.Typer) -> None:
    app.command()(ab)


def ab(
    model_a: Annotated[Path, typer.Argument(help="The control model (A).")],
    model_b: Annotated[
        Path | None, typer.Argument(help="The treatment model (B); default: A again.")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", "-d", help="local, tcp:HOST:PORT, usb:SERIAL.")
    ] = "local",
    backend: Annotated[str, typer.Option("--backend", "-b", help="Backend of both.")] = "tvm-cpu",
    option_a: Annotated[
        list[str] | None,
        typer.Option("--option-a", help="A's backend option KEY=VALUE; repeatable."),
    ] = None,
    option_b: Annotated[
        list[str] | None,
        typer.Option("--option-b", help="B's backend option KEY=VALUE; repeatable."),
    ] = None,
    artifact_a: Annotated[
        str | None,
        typer.Option(
            "--artifact-a",
            help="Run A's stored build: an artifact key of the compile cache (a result's "
            "provenance.artifact_key), instead of building A now.",
        ),
    ] = None,
    artifact_b: Annotated[
        str | None, typer.Option("--artifact-b", help="B's stored build, as --artifact-a.")
    ] = None,
    blocks: Annotated[
        int, typer.Option(min=2, max=MAX_BLOCKS, help="Pairs of blocks (A B, then B A, ...).")
    ] = 10,
    min_seconds: Annotated[float, typer.Option(help="Timed seconds per block.")] = 0.5,
    warmup: Annotated[int, typer.Option(help="Untimed calls per block.")] = 5,
    min_effect: Annotated[
        float, typer.Option(help="Smallest difference called a change (0.01 = 1%).")
    ] = 0.01,
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Input spec NAME:1x3x224x224[:float32]; repeatable."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
) -> None:
    """Measure A and B in alternating blocks on one device; print the ratio B/A with its 95%
    interval and a verdict (slower, faster, same, inconclusive). Exit 0 unless it failed.

    A and B are two models, one model with two option sets (--option-a/--option-b), or two
    stored builds (--artifact-a/--artifact-b: e.g. last week's artifact against today's, both
    of the model files given)."""
    from harness.backends import get_backend
    from harness.backends.pinned import check_artifact_key
    from harness.devices import open_device
    from harness.modelio import load, parse_input_spec
    from harness.regression.ab import Arm, interleaved

    with usage_errors():
        settings = MeasurementSettings.checked(warmup=warmup, min_seconds=min_seconds)
        options_a = parse_options([f"{backend}.{o}" for o in option_a or []]).get(backend)
        options_b = parse_options([f"{backend}.{o}" for o in option_b or []]).get(backend)
        specs = [parse_input_spec(text) for text in input or []]
        chosen = get_backend(backend)
        for key in (artifact_a, artifact_b):
            if key is not None:
                check_artifact_key(key)
        first = load(model_a, specs)
        second = load(model_b, specs) if model_b is not None else first
    control = Arm(_label("A", model_a, artifact_a), first, chosen, options_a, artifact_a)
    treatment = Arm(
        _label("B", model_b or model_a, artifact_b), second, chosen, options_b, artifact_b
    )
    opened = open_device(device)
    try:
        with console.status("preparing", spinner="dots") as status:
            experiment = interleaved(
                opened,
                control,
                treatment,
                blocks=blocks,
                protocol=settings.protocol(),
                min_effect=min_effect,
                progress=lambda event, message: status.update(f"[bold]{event}[/]: {message}"),
            )
    finally:
        opened.close()
    paired = experiment.paired
    if paired is None:
        raise typer.BadParameter("the blocks' medians were 0 ms: nothing to compare")
    out.print(
        f"{control.label}: median of blocks {_median(experiment.control_ms):.4g} ms\n"
        f"{treatment.label}: median of blocks {_median(experiment.treatment_ms):.4g} ms\n"
        f"B/A = {paired.ratio:.4f} (95% CI {paired.ratio_low:.4f}-{paired.ratio_high:.4f}), "
        f"p = {paired.pvalue:.2g} over {len(experiment.control_ms)} block pairs: "
        f"[bold]{paired.verdict}[/]",
        highlight=False,
    )
    if json_path is not None:
        json_path.write_text(json.dumps(experiment.to_dict(), indent=1))


def _label(side: str, model: Path, artifact: str | None) -> str:
    return f"{side} ({model.name}{f', artifact {artifact[:12]}' if artifact else ''})"


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)
