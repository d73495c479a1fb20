"""TFLite: parse (``tflite`` flatbuffer schema), describe, and import into Relax."""

from __future__ import annotations

from typing import Any

from harness.errors import JobError, one_line
from harness.modelio.specs import Dim, TensorSpec

# tflite.TensorType enum values -> numpy dtype names.
_TFLITE_DTYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
}


def parse(data: bytes, *, source: str) -> Any:
    """Parse TFLite bytes into a ``tflite.Model``; a truncated or corrupt file is a JobError."""
    import tflite

    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise JobError("import", f"{source} is a TFLite file with no subgraph")
        subgraph = model.Subgraphs(0)
        # Touch every tensor the harness reads so that a truncated buffer fails here.
        for i in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(i)
            tensor.Name()
            tensor.ShapeAsNumpy()
        subgraph.InputsAsNumpy()
        subgraph.OutputsAsNumpy()
        # Weights sit at the end of the file: a truncated file loses them first.
        for i in range(model.BuffersLength()):
            buffer = model.Buffers(i)
            if buffer.DataLength():
                buffer.DataAsNumpy()
            if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > len(data):
                raise JobError("import", f"{source} is truncated: buffer {i} lies past its end")
    except JobError:
        raise
    except Exception as exc:  # flatbuffers raises IndexError/struct.error on truncation
        raise JobError(
            "import", f"{source} is a truncated or corrupt TFLite file ({type(exc).__name__})"
        ) from None
    return model


def _tensor_spec(subgraph: Any, index: int, *, what: str) -> TensorSpec:
    tensor = subgraph.Tensors(int(index))
    name = tensor.Name().decode("utf-8", errors="replace")
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    signature = (
        [int(d) for d in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else []
    )
    dims: list[Dim] = []
    for axis, size in enumerate(shape):
        dynamic = signature and axis < len(signature) and signature[axis] < 0
        dims.append("?" if dynamic or size < 0 else size)
    dtype = _TFLITE_DTYPES.get(tensor.Type())
    if dtype is None:
        raise JobError("import", f"{what} {name!r} has TFLite type {tensor.Type()}, not handled")
    return TensorSpec(name, tuple(dims), dtype)


def declared_inputs(model: Any) -> list[TensorSpec]:
    subgraph = model.Subgraphs(0)
    return [_tensor_spec(subgraph, i, what="input") for i in subgraph.InputsAsNumpy()]


def declared_outputs(model: Any) -> list[TensorSpec]:
    subgraph = model.Subgraphs(0)
    return [_tensor_spec(subgraph, i, what="output") for i in subgraph.OutputsAsNumpy()]


def to_relax(model: Any, inputs: list[TensorSpec], *, source: str) -> Any:
    """Import with TVM's Relax TFLite frontend at the given static input shapes."""
    import tvm
    from tvm.relax.frontend.tflite import from_tflite

    shape_dict = {s.name: tuple(s.static_shape()) for s in inputs}
    dtype_dict = {s.name: s.dtype for s in inputs}
    try:
        mod = from_tflite(model, shape_dict=shape_dict, dtype_dict=dtype_dict)
    except tvm.error.OpNotImplemented as exc:
        raise JobError(
            "import",
            f"{source}: TVM's TFLite importer does not support {one_line(str(exc))}",
        ) from None
    except Exception as exc:
        raise JobError(
            "import", f"{source}: TVM failed to import the TFLite graph: {one_line(str(exc))}"
        ) from None
    return mod[0] if isinstance(mod, tuple) else mod
