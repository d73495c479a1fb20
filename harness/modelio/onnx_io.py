"""ONNX: parse, describe, prepare (fix shapes, fold shape subgraphs) and import into Relax."""

from __future__ import annotations

import logging
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from harness.errors import JobError, one_line
from harness.modelio.specs import Dim, TensorSpec

log = logging.getLogger(__name__)

_ONNX_DTYPES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.BOOL: "bool",
}


def parse(data: bytes, *, source: str) -> onnx.ModelProto:
    """Parse ONNX bytes, refusing what is not a usable ONNX model with a one-line reason."""
    try:
        model = onnx.load_model_from_string(data)
    except DecodeError:
        raise JobError(
            "import",
            f"{source} is neither a TFLite, .pt2 nor a valid ONNX file (protobuf decoding failed: "
            "truncated, corrupt, or another format)",
        ) from None
    except Exception as exc:  # onnx raises bare Exceptions for several malformed inputs
        raise JobError("import", f"{source} cannot be read as ONNX: {one_line(str(exc))}") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise JobError(
            "import",
            f"{source} is not a model: it has no ONNX graph with outputs (not an ONNX, TFLite or "
            ".pt2 file?)",
        )
    if not model.graph.node:
        raise JobError("import", f"{source} is an ONNX model with an empty graph")
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        raise JobError(
            "import",
            f"{source} keeps its weights in external data files; save it as one file "
            "(onnx.save_model(model, path, save_as_external_data=False))",
        )
    return model


def _dtype_of(elem_type: int, *, what: str) -> str:
    dtype = _ONNX_DTYPES.get(elem_type)
    if dtype is None:
        name = TensorProto.DataType.Name(elem_type) if elem_type else "undefined"
        raise JobError("import", f"{what} has element type {name}, which edgefarm does not handle")
    return dtype


def _value_info_spec(value: onnx.ValueInfoProto, *, what: str) -> TensorSpec:
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise JobError("import", f"{what} {value.name!r} is not a tensor (sequence/map/optional)")
    dims: list[Dim] = []
    if tensor_type.HasField("shape"):
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value >= 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or "?")
    return TensorSpec(
        value.name, tuple(dims), _dtype_of(tensor_type.elem_type, what=f"{what} {value.name!r}")
    )


def declared_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The graph inputs that are real inputs (initializers listed as inputs are weights)."""
    weights = {t.name for t in model.graph.initializer}
    return [_value_info_spec(v, what="input") for v in model.graph.input if v.name not in weights]


def declared_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_value_info_spec(v, what="output") for v in model.graph.output]


def prepare(model: onnx.ModelProto, inputs: list[TensorSpec], *, source: str) -> onnx.ModelProto:
    """Fix the input shapes and fold shape-computing subgraphs (onnxslim).

    Exporters leave ``Shape -> Gather -> Concat -> Reshape`` chains behind for dynamic sizes;
    TVM's importer needs those resolved to constants, which fixing the input shapes and running
    onnxslim's constant folding does.
    """
    import onnxslim

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    by_name = {spec.name: spec for spec in inputs}
    for value in fixed.graph.input:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for size in spec.static_shape():
            shape.dim.add().dim_value = size
    # Intermediate value_info may carry stale dynamic shapes; shape inference rebuilds them.
    del fixed.graph.value_info[:]
    try:
        slimmed = onnxslim.slim(fixed)
    except Exception as exc:  # onnxslim surfaces onnx/onnxruntime errors of all kinds
        raise JobError(
            "prepare", f"{source}: folding shape subgraphs failed: {one_line(str(exc))}"
        ) from None
    if slimmed is None:
        raise JobError("prepare", f"{source}: onnxslim returned no model")
    try:
        slimmed = onnx.shape_inference.infer_shapes(slimmed, strict_mode=False)
    except Exception as exc:
        log.debug("shape inference after slimming failed: %s", exc)
    # onnxslim may write a newer IR version than the input's, which onnxruntime may refuse.
    slimmed.ir_version = min(slimmed.ir_version, model.ir_version)
    return slimmed


def to_relax(model: onnx.ModelProto, inputs: list[TensorSpec], *, source: str) -> Any:
    """Import a prepared ONNX model into a Relax IRModule (weights bound as constants)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    shape_dict = {spec.name: list(spec.static_shape()) for spec in inputs}
    dtype_dict = {spec.name: spec.dtype for spec in inputs}
    try:
        return from_onnx(
            model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=False
        )
    except tvm.error.OpNotImplemented as exc:
        ops = str(exc).split(":", 1)[-1].strip().splitlines()[0] if ":" in str(exc) else str(exc)
        raise JobError(
            "import",
            f"{source}: TVM's ONNX importer does not support operator(s) {ops}; the 'ort' "
            "backend can still run this model",
        ) from None
    except Exception as exc:
        raise JobError(
            "import", f"{source}: TVM failed to import the ONNX graph: {one_line(str(exc))}"
        ) from None
