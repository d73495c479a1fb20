"""Model import: a file in, a prepared model with static inputs out, and from it a Relax module.

Stages: reading and recognising the file is ``import``; resolving input shapes and folding
shape subgraphs is ``prepare``; TVM's frontends (``to_relax``) are ``import`` again, since
they fail on what the model contains (an unsupported operator) rather than on its shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import JobError
from harness.modelio.formats import FORMATS, ModelFile, ModelFormat, model_from_bytes, read_model
from harness.modelio.specs import (
    InputLimits,
    InputSpec,
    InputTooLarge,
    ModelDescription,
    TensorSpec,
    check_input_sizes,
    normalize_dtype,
    parse_input_spec,
    resolve_inputs,
)

__all__ = [
    "FORMATS",
    "InputLimits",
    "InputSpec",
    "InputTooLarge",
    "ModelDescription",
    "ModelFile",
    "ModelFormat",
    "PreparedModel",
    "TensorSpec",
    "check_input_sizes",
    "load",
    "model_from_bytes",
    "normalize_dtype",
    "parse_input_spec",
    "prepare",
    "read_model",
    "to_relax",
]


@dataclass
class PreparedModel:
    """A model whose inputs are all static, ready for TVM and for reference runs."""

    file: ModelFile
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # The parsed, prepared form: onnx.ModelProto (shapes fixed, folded), tflite.Model, or
    # torch ExportedProgram.
    graph: Any = field(repr=False)

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def format(self) -> ModelFormat:
        return self.file.format

    def input_spec_key(self) -> str:
        """A canonical text of the input specs, part of the artifact cache key."""
        return ";".join(f"{s.name}:{s.shape_str()}:{s.dtype}" for s in self.inputs)

    def description(self) -> ModelDescription:
        """The ``model`` object of the result document."""
        return ModelDescription(
            name=self.file.name,
            sha256=self.file.sha256,
            format=self.file.format,
            size=self.file.size,
            inputs=self.inputs,
            outputs=self.outputs,
        )


def prepare(
    model: ModelFile, given: list[InputSpec] | None = None, *, limits: InputLimits | None = None
) -> PreparedModel:
    """Parse ``model``, resolve its inputs against ``given`` specs, and prepare its graph.

    Inputs over ``limits`` (default: the settings') are an :class:`InputTooLarge` before
    anything of their size is made."""
    # The format readers (onnx, tflite, torch) are imported when a model is read: a command
    # that only talks to the farm (``edgefarm suite list``) imports this package for its types
    # and should not pay for onnx's import (about 0.8 s of CPU).
    from harness.modelio import onnx_io, tflite_io, torch_io

    given = given or []
    limits = limits or InputLimits.default()
    source = model.name
    if model.format == "onnx":
        graph = onnx_io.parse(model.data, source=source)
        inputs = resolve_inputs(onnx_io.declared_inputs(graph), given, model_name=source)
        check_input_sizes(inputs, limits)
        if not inputs:
            raise JobError(
                "import", f"{source} has no inputs; edgefarm benchmarks models with inputs"
            )
        graph = onnx_io.prepare(graph, inputs, source=source)
        outputs = onnx_io.declared_outputs(graph)
    elif model.format == "tflite":
        graph = tflite_io.parse(model.data, source=source)
        inputs = resolve_inputs(tflite_io.declared_inputs(graph), given, model_name=source)
        check_input_sizes(inputs, limits)
        outputs = tflite_io.declared_outputs(graph)
    elif model.format == "pt2":
        graph = torch_io.parse(model.data, source=source)
        inputs = resolve_inputs(torch_io.declared_inputs(graph), given, model_name=source)
        check_input_sizes(inputs, limits)
        outputs = torch_io.declared_outputs(graph)
    else:  # pragma: no cover - detect_format returns only the three
        raise JobError("import", f"{source}: unknown model format {model.format!r}")
    return PreparedModel(file=model, inputs=inputs, outputs=outputs, graph=graph)


def load(
    path: Path, given: list[InputSpec] | None = None, *, limits: InputLimits | None = None
) -> PreparedModel:
    """Read, recognise and prepare the model at ``path``."""
    return prepare(read_model(path), given, limits=limits)


def to_relax(model: PreparedModel) -> Any:
    """Import a prepared model into a Relax ``IRModule`` (stage ``import``)."""
    from harness.modelio import onnx_io, tflite_io, torch_io

    source = model.name
    if model.format == "onnx":
        return onnx_io.to_relax(model.graph, model.inputs, source=source)
    if model.format == "tflite":
        return tflite_io.to_relax(model.graph, model.inputs, source=source)
    return torch_io.to_relax(model.graph, model.inputs, source=source)
