"""``edgefarm examples``: write the MLPerf Tiny example models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.render import console, out


def register(app: typer.Typer) -> None:
    app.command()(examples)


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
