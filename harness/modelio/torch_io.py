"""PyTorch ExportedProgram (``.pt2`` from ``torch.export.save``): describe and import."""

from __future__ import annotations

import io
from typing import Any

from harness.errors import JobError, one_line
from harness.modelio.specs import Dim, TensorSpec

_TORCH_DTYPES = {
    "torch.float32": "float32",
    "torch.float16": "float16",
    "torch.int8": "int8",
    "torch.uint8": "uint8",
    "torch.int16": "int16",
    "torch.int32": "int32",
    "torch.int64": "int64",
    "torch.bool": "bool",
}


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise JobError(
            "import",
            "this is a PyTorch .pt2 model and PyTorch is not installed; "
            "pip install 'edgefarm[torch]'",
        ) from None
    return torch


def parse(data: bytes, *, source: str) -> Any:
    torch = _torch()
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as exc:
        raise JobError(
            "import", f"{source} cannot be loaded as an ExportedProgram: {one_line(str(exc))}"
        ) from None


def _placeholder_specs(program: Any, names: list[str], *, what: str) -> list[TensorSpec]:
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = []
    for name in names:
        value = nodes[name].meta.get("val")
        if value is None or not hasattr(value, "shape"):
            raise JobError("import", f"{what} {name!r} of the ExportedProgram is not a tensor")
        dims: list[Dim] = [int(d) if str(d).isdigit() else str(d) for d in value.shape]
        dtype = _TORCH_DTYPES.get(str(value.dtype))
        if dtype is None:
            raise JobError("import", f"{what} {name!r} has dtype {value.dtype}, not handled")
        specs.append(TensorSpec(name, tuple(dims), dtype))
    return specs


def declared_inputs(program: Any) -> list[TensorSpec]:
    return _placeholder_specs(program, list(program.graph_signature.user_inputs), what="input")


def declared_outputs(program: Any) -> list[TensorSpec]:
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    specs = []
    for i, arg in enumerate(out_node.args[0]):
        value = getattr(arg, "meta", {}).get("val")
        shape: tuple[Dim, ...] = tuple(
            int(d) if str(d).isdigit() else str(d) for d in getattr(value, "shape", ())
        )
        dtype = _TORCH_DTYPES.get(str(getattr(value, "dtype", "")), "float32")
        specs.append(TensorSpec(f"output{i}", shape, dtype))
    return specs


def to_relax(program: Any, inputs: list[TensorSpec], *, source: str) -> Any:
    from tvm.relax.frontend.torch import from_exported_program

    try:
        return from_exported_program(program, keep_params_as_input=False)
    except Exception as exc:
        raise JobError(
            "import", f"{source}: TVM failed to import the ExportedProgram: {one_line(str(exc))}"
        ) from None


def run_reference(program: Any, arrays: list[Any]) -> list[Any]:
    """Run the ExportedProgram eagerly in PyTorch: the reference for .pt2 models."""
    torch = _torch()
    with torch.no_grad():
        out = program.module()(*[torch.from_numpy(a.copy()) for a in arrays])
    flat = out if isinstance(out, (tuple, list)) else [out]
    return [t.detach().cpu().numpy() for t in flat]
