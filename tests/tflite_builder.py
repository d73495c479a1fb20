"""A small TFLite model writer for tests (no TensorFlow needed).

``TFLiteGraph`` collects tensors, constant buffers and operators of a single subgraph and
serialises them with the ``tflite`` package's generated flatbuffer builder functions, as a
schema version 3 model with file identifier ``TFL3``. Float32 tensors are the norm; int32
constants serve as shape/axis/index operands.

The caller states every operator's output shape: the writer does no shape inference, so a
wrong shape produces a model that LiteRT rejects (or resizes) rather than one silently fixed.

Operators (``op`` name -> keyword options, defaults in brackets):

- ``FULLY_CONNECTED`` inputs [x, weights [out, in], bias?]: activation ["NONE"]
- ``CONV_2D`` inputs [x NHWC, filter [out_c, kh, kw, in_c], bias]: padding ["SAME"],
  strides [(1, 1)], dilation [(1, 1)], activation ["NONE"]
- ``DEPTHWISE_CONV_2D`` inputs [x, filter [1, kh, kw, c * m], bias]: padding, strides,
  dilation, depth_multiplier [1], activation
- ``ADD`` inputs [a, b]: activation
- ``RELU`` inputs [x]
- ``AVERAGE_POOL_2D`` inputs [x]: filter_size (required), padding ["VALID"], strides, activation
- ``MEAN`` inputs [x, axes (int32)]: keep_dims [False]
- ``RESHAPE`` inputs [x] or [x, shape (int32)]: new_shape [None]
- ``SOFTMAX`` inputs [x]: beta [1.0]
- ``DYNAMIC_UPDATE_SLICE`` inputs [operand, update, start_indices (int32)]; implemented by
  LiteRT but absent from TVM's Relax TFLite frontend, for "unsupported operator" tests.

Activation names are ``tflite.ActivationFunctionType`` members ("NONE", "RELU", "RELU6",
...); padding names are ``tflite.Padding`` members ("SAME", "VALID").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
import tflite

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

_TENSOR_TYPES = {
    np.dtype(np.float32): tflite.TensorType.FLOAT32,
    np.dtype(np.int32): tflite.TensorType.INT32,
}

# Operator codes above 127 do not fit the int8 ``deprecated_builtin_code`` field, which then
# holds this placeholder while ``builtin_code`` holds the real value.
_PLACEHOLDER_CODE = tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    buffer: int  # 0 is the empty buffer of non-constant tensors
    shape_signature: tuple[int, ...] | None = None


@dataclass
class _Operator:
    opcode: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]


# --- builtin options tables -------------------------------------------------------------------

Options = dict[str, Any]
_OptionsWriter = Callable[[flatbuffers.Builder, Options], int]


def _activation(options: Options) -> int:
    return int(getattr(tflite.ActivationFunctionType, options.pop("activation", "NONE")))


def _padding(options: Options, default: str) -> int:
    return int(getattr(tflite.Padding, options.pop("padding", default)))


def _pair(options: Options, key: str, default: tuple[int, int]) -> tuple[int, int]:
    value = options.pop(key, default)
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def _fully_connected_options(b: flatbuffers.Builder, o: Options) -> int:
    activation = _activation(o)
    tflite.FullyConnectedOptionsStart(b)
    tflite.FullyConnectedOptionsAddFusedActivationFunction(b, activation)
    return int(tflite.FullyConnectedOptionsEnd(b))


def _conv_2d_options(b: flatbuffers.Builder, o: Options) -> int:
    padding, activation = _padding(o, "SAME"), _activation(o)
    stride_h, stride_w = _pair(o, "strides", (1, 1))
    dilation_h, dilation_w = _pair(o, "dilation", (1, 1))
    tflite.Conv2DOptionsStart(b)
    tflite.Conv2DOptionsAddPadding(b, padding)
    tflite.Conv2DOptionsAddStrideH(b, stride_h)
    tflite.Conv2DOptionsAddStrideW(b, stride_w)
    tflite.Conv2DOptionsAddDilationHFactor(b, dilation_h)
    tflite.Conv2DOptionsAddDilationWFactor(b, dilation_w)
    tflite.Conv2DOptionsAddFusedActivationFunction(b, activation)
    return int(tflite.Conv2DOptionsEnd(b))


def _depthwise_conv_2d_options(b: flatbuffers.Builder, o: Options) -> int:
    padding, activation = _padding(o, "SAME"), _activation(o)
    stride_h, stride_w = _pair(o, "strides", (1, 1))
    dilation_h, dilation_w = _pair(o, "dilation", (1, 1))
    depth_multiplier = int(o.pop("depth_multiplier", 1))
    tflite.DepthwiseConv2DOptionsStart(b)
    tflite.DepthwiseConv2DOptionsAddPadding(b, padding)
    tflite.DepthwiseConv2DOptionsAddStrideH(b, stride_h)
    tflite.DepthwiseConv2DOptionsAddStrideW(b, stride_w)
    tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, dilation_h)
    tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, dilation_w)
    tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, depth_multiplier)
    tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, activation)
    return int(tflite.DepthwiseConv2DOptionsEnd(b))


def _add_options(b: flatbuffers.Builder, o: Options) -> int:
    activation = _activation(o)
    tflite.AddOptionsStart(b)
    tflite.AddOptionsAddFusedActivationFunction(b, activation)
    return int(tflite.AddOptionsEnd(b))


def _pool_2d_options(b: flatbuffers.Builder, o: Options) -> int:
    if "filter_size" not in o:
        raise TypeError("AVERAGE_POOL_2D needs filter_size=(h, w)")
    filter_h, filter_w = _pair(o, "filter_size", (1, 1))
    padding, activation = _padding(o, "VALID"), _activation(o)
    stride_h, stride_w = _pair(o, "strides", (1, 1))
    tflite.Pool2DOptionsStart(b)
    tflite.Pool2DOptionsAddPadding(b, padding)
    tflite.Pool2DOptionsAddStrideH(b, stride_h)
    tflite.Pool2DOptionsAddStrideW(b, stride_w)
    tflite.Pool2DOptionsAddFilterHeight(b, filter_h)
    tflite.Pool2DOptionsAddFilterWidth(b, filter_w)
    tflite.Pool2DOptionsAddFusedActivationFunction(b, activation)
    return int(tflite.Pool2DOptionsEnd(b))


def _reducer_options(b: flatbuffers.Builder, o: Options) -> int:
    keep_dims = bool(o.pop("keep_dims", False))
    tflite.ReducerOptionsStart(b)
    tflite.ReducerOptionsAddKeepDims(b, keep_dims)
    return int(tflite.ReducerOptionsEnd(b))


def _reshape_options(b: flatbuffers.Builder, o: Options) -> int:
    new_shape = o.pop("new_shape", None)
    vector = None if new_shape is None else b.CreateNumpyVector(np.asarray(new_shape, np.int32))
    tflite.ReshapeOptionsStart(b)
    if vector is not None:
        tflite.ReshapeOptionsAddNewShape(b, vector)
    return int(tflite.ReshapeOptionsEnd(b))


def _softmax_options(b: flatbuffers.Builder, o: Options) -> int:
    beta = float(o.pop("beta", 1.0))
    tflite.SoftmaxOptionsStart(b)
    tflite.SoftmaxOptionsAddBeta(b, beta)
    return int(tflite.SoftmaxOptionsEnd(b))


def _dynamic_update_slice_options(b: flatbuffers.Builder, o: Options) -> int:
    tflite.DynamicUpdateSliceOptionsStart(b)
    return int(tflite.DynamicUpdateSliceOptionsEnd(b))


@dataclass(frozen=True)
class _OpKind:
    """How to write an operator's options: a tflite.BuiltinOptions member and its writer."""

    options_type: str | None = None  # None: the operator has no options table
    write_options: _OptionsWriter | None = None


_OPS: dict[str, _OpKind] = {
    "FULLY_CONNECTED": _OpKind("FullyConnectedOptions", _fully_connected_options),
    "CONV_2D": _OpKind("Conv2DOptions", _conv_2d_options),
    "DEPTHWISE_CONV_2D": _OpKind("DepthwiseConv2DOptions", _depthwise_conv_2d_options),
    "ADD": _OpKind("AddOptions", _add_options),
    "RELU": _OpKind(),
    "AVERAGE_POOL_2D": _OpKind("Pool2DOptions", _pool_2d_options),
    "MEAN": _OpKind("ReducerOptions", _reducer_options),
    "RESHAPE": _OpKind("ReshapeOptions", _reshape_options),
    "SOFTMAX": _OpKind("SoftmaxOptions", _softmax_options),
    "DYNAMIC_UPDATE_SLICE": _OpKind("DynamicUpdateSliceOptions", _dynamic_update_slice_options),
}


def _write_options(b: flatbuffers.Builder, opcode: str, options: Options) -> int | None:
    """Write ``opcode``'s options table (None if it has none); unknown options are an error."""
    write = _OPS[opcode].write_options
    remaining = dict(options)  # each writer pops the options it knows
    offset = None if write is None else write(b, remaining)
    if remaining:
        raise TypeError(f"{opcode}: unknown options {sorted(remaining)}")
    return offset


#: The operator LiteRT runs but ``tvm.relax.frontend.tflite`` has no converter for.
UNSUPPORTED_BY_TVM = "DYNAMIC_UPDATE_SLICE"


# --- the graph --------------------------------------------------------------------------------


class TFLiteGraph:
    """One subgraph under construction; tensor indices are what the methods return."""

    def __init__(self) -> None:
        self._tensors: list[_Tensor] = []
        self._buffers: list[bytes] = [b""]  # buffer 0: the conventional empty buffer
        self._operators: list[_Operator] = []
        self._inputs: list[int] = []
        self._outputs: list[int] = []

    def _add_tensor(self, tensor: _Tensor) -> int:
        if any(t.name == tensor.name for t in self._tensors):
            raise ValueError(f"duplicate tensor name {tensor.name!r}")
        self._tensors.append(tensor)
        return len(self._tensors) - 1

    def input(
        self, name: str, shape: Sequence[int], shape_signature: Sequence[int] | None = None
    ) -> int:
        """A float32 graph input; ``shape_signature`` with -1 marks dynamic dimensions."""
        if shape_signature is not None and len(shape_signature) != len(shape):
            raise ValueError("shape_signature must have the rank of shape")
        index = self._add_tensor(
            _Tensor(
                name,
                tuple(shape),
                np.dtype(np.float32),
                0,
                None if shape_signature is None else tuple(shape_signature),
            )
        )
        self._inputs.append(index)
        return index

    def const(self, name: str, array: np.ndarray) -> int:
        """A constant tensor (float32 or int32) holding ``array``'s values."""
        if array.dtype not in _TENSOR_TYPES:
            raise TypeError(f"const {name!r}: dtype {array.dtype} not supported (float32, int32)")
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
        self._buffers.append(data.tobytes())
        return self._add_tensor(
            _Tensor(name, tuple(array.shape), array.dtype, len(self._buffers) - 1)
        )

    def op(
        self,
        opcode: str,
        inputs: Sequence[int],
        out_name: str,
        out_shape: Sequence[int],
        *,
        out_shape_signature: Sequence[int] | None = None,
        **options: Any,
    ) -> int:
        """Append operator ``opcode`` with one float32 output; returns the output's index."""
        if opcode not in _OPS:
            raise ValueError(f"operator {opcode!r} not supported (one of {sorted(_OPS)})")
        for i in inputs:
            if not 0 <= i < len(self._tensors):
                raise IndexError(f"{opcode}: input tensor {i} does not exist")
        _write_options(flatbuffers.Builder(0), opcode, options)  # raises on a bad option now
        output = self._add_tensor(
            _Tensor(
                out_name,
                tuple(out_shape),
                np.dtype(np.float32),
                0,
                None if out_shape_signature is None else tuple(out_shape_signature),
            )
        )
        self._operators.append(_Operator(opcode, list(inputs), [output], dict(options)))
        return output

    def output(self, idx: int) -> None:
        """Mark tensor ``idx`` as a graph output."""
        self._outputs.append(idx)

    # --- serialisation ------------------------------------------------------------------------

    def build(self) -> bytes:
        """Serialise to TFLite flatbuffer bytes."""
        if not self._outputs:
            raise ValueError("the graph has no outputs")
        b = flatbuffers.Builder(1024)
        # Flatbuffers are written bottom-up: children before the tables that refer to them.
        buffers = [self._write_buffer(b, data) for data in self._buffers]
        tensors = [self._write_tensor(b, t) for t in self._tensors]
        opcodes = sorted({op.opcode for op in self._operators})
        opcode_index = {name: i for i, name in enumerate(opcodes)}
        operators = [self._write_operator(b, op, opcode_index[op.opcode]) for op in self._operators]

        tensors_vec = _offset_vector(b, tflite.SubGraphStartTensorsVector, tensors)
        inputs_vec = _int32_vector(b, self._inputs)
        outputs_vec = _int32_vector(b, self._outputs)
        operators_vec = _offset_vector(b, tflite.SubGraphStartOperatorsVector, operators)
        name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors_vec)
        tflite.SubGraphAddInputs(b, inputs_vec)
        tflite.SubGraphAddOutputs(b, outputs_vec)
        tflite.SubGraphAddOperators(b, operators_vec)
        tflite.SubGraphAddName(b, name)
        subgraph = tflite.SubGraphEnd(b)

        codes = [self._write_opcode(b, name) for name in opcodes]
        codes_vec = _offset_vector(b, tflite.ModelStartOperatorCodesVector, codes)
        subgraphs_vec = _offset_vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
        buffers_vec = _offset_vector(b, tflite.ModelStartBuffersVector, buffers)
        description = b.CreateString("edgefarm tests tflite_builder")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, SCHEMA_VERSION)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddDescription(b, description)
        tflite.ModelAddBuffers(b, buffers_vec)
        model = tflite.ModelEnd(b)
        b.Finish(model, file_identifier=FILE_IDENTIFIER)
        return bytes(b.Output())

    @staticmethod
    def _write_buffer(b: flatbuffers.Builder, data: bytes) -> int:
        vector = None
        if data:
            # Start the payload on a 16-byte boundary, as TFLite's own writer does, so that
            # kernels may read constants in place.
            b.Prep(16, len(data))
            vector = b.CreateNumpyVector(np.frombuffer(data, dtype=np.uint8))
        tflite.BufferStart(b)
        if vector is not None:
            tflite.BufferAddData(b, vector)
        return int(tflite.BufferEnd(b))

    @staticmethod
    def _write_tensor(b: flatbuffers.Builder, t: _Tensor) -> int:
        name = b.CreateString(t.name)
        shape = _int32_vector(b, t.shape)
        signature = None if t.shape_signature is None else _int32_vector(b, t.shape_signature)
        tflite.TensorStart(b)
        tflite.TensorAddName(b, name)
        tflite.TensorAddShape(b, shape)
        if signature is not None:
            tflite.TensorAddShapeSignature(b, signature)
        tflite.TensorAddType(b, _TENSOR_TYPES[t.dtype])
        tflite.TensorAddBuffer(b, t.buffer)
        return int(tflite.TensorEnd(b))

    @staticmethod
    def _write_operator(b: flatbuffers.Builder, op: _Operator, opcode_index: int) -> int:
        kind = _OPS[op.opcode]
        options = _write_options(b, op.opcode, op.options)
        inputs = _int32_vector(b, op.inputs)
        outputs = _int32_vector(b, op.outputs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode_index)
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if kind.options_type is not None and options is not None:
            tflite.OperatorAddBuiltinOptionsType(
                b, getattr(tflite.BuiltinOptions, kind.options_type)
            )
            tflite.OperatorAddBuiltinOptions(b, options)
        return int(tflite.OperatorEnd(b))

    @staticmethod
    def _write_opcode(b: flatbuffers.Builder, name: str) -> int:
        code = int(getattr(tflite.BuiltinOperator, name))
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, _PLACEHOLDER_CODE))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        return int(tflite.OperatorCodeEnd(b))


def _int32_vector(b: flatbuffers.Builder, values: Sequence[int]) -> int:
    return int(b.CreateNumpyVector(np.asarray(values, dtype=np.int32).reshape(-1)))


def _offset_vector(
    b: flatbuffers.Builder, start: Callable[[flatbuffers.Builder, int], Any], offsets: list[int]
) -> int:
    start(b, len(offsets))
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return int(b.EndVector())


# --- ready-made models ------------------------------------------------------------------------


def conv_out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a convolution/pool window along one axis, as TFLite computes it."""
    if padding == "SAME":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _weights(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _weight_and_bias(
    g: TFLiteGraph,
    rng: np.random.Generator,
    layer: str,
    kind: str,
    shape: tuple[int, ...],
    channels: int | None = None,
) -> tuple[int, int]:
    """Random constants "<layer>/<kind>" of ``shape`` and "<layer>/bias" of ``channels``
    (by default the first dimension: output channels of a conv filter or FC weights)."""
    weight = g.const(f"{layer}/{kind}", _weights(rng, *shape))
    bias = g.const(f"{layer}/bias", _weights(rng, shape[0] if channels is None else channels))
    return weight, bias


def mlp_tflite(seed: int = 0) -> bytes:
    """x [1, 16] -> FULLY_CONNECTED 32 (fused RELU) -> FULLY_CONNECTED 10 -> SOFTMAX."""
    rng = np.random.default_rng(seed)
    g = TFLiteGraph()
    x = g.input("x", [1, 16])
    w, b = _weight_and_bias(g, rng, "fc1", "weights", (32, 16))
    y = g.op("FULLY_CONNECTED", [x, w, b], "fc1", [1, 32], activation="RELU")
    w, b = _weight_and_bias(g, rng, "fc2", "weights", (10, 32))
    y = g.op("FULLY_CONNECTED", [y, w, b], "fc2", [1, 10])
    g.output(g.op("SOFTMAX", [y], "probs", [1, 10], beta=1.0))
    return g.build()


def cnn_tflite(seed: int = 0) -> bytes:
    """image [1, 16, 16, 3] -> CONV_2D 3x3 8 SAME RELU6 -> DEPTHWISE_CONV_2D 3x3 stride 2 SAME
    RELU -> CONV_2D 1x1 16 -> AVERAGE_POOL_2D 8x8 -> RESHAPE [1, 16] -> FULLY_CONNECTED 10
    -> SOFTMAX."""
    rng = np.random.default_rng(seed)
    g = TFLiteGraph()
    image = g.input("image", [1, 16, 16, 3])

    w, b = _weight_and_bias(g, rng, "conv1", "filter", (8, 3, 3, 3))
    y = g.op(
        "CONV_2D",
        [image, w, b],
        "conv1",
        [1, 16, 16, 8],
        padding="SAME",
        strides=(1, 1),
        activation="RELU6",
    )

    side = conv_out_size(16, 3, 2, "SAME")  # 8: SAME pads 0 rows before and 1 after
    w, b = _weight_and_bias(g, rng, "dw", "filter", (1, 3, 3, 8), channels=8)
    y = g.op(
        "DEPTHWISE_CONV_2D",
        [y, w, b],
        "dw",
        [1, side, side, 8],
        padding="SAME",
        strides=(2, 2),
        depth_multiplier=1,
        activation="RELU",
    )

    w, b = _weight_and_bias(g, rng, "conv2", "filter", (16, 1, 1, 8))
    y = g.op("CONV_2D", [y, w, b], "conv2", [1, side, side, 16], padding="VALID")

    y = g.op(
        "AVERAGE_POOL_2D",
        [y],
        "pool",
        [1, 1, 1, 16],
        filter_size=(side, side),
        strides=(side, side),
        padding="VALID",
    )
    shape = g.const("flat/shape", np.array([1, 16], np.int32))
    y = g.op("RESHAPE", [y, shape], "flat", [1, 16], new_shape=[1, 16])

    w, b = _weight_and_bias(g, rng, "fc", "weights", (10, 16))
    y = g.op("FULLY_CONNECTED", [y, w, b], "fc", [1, 10])
    g.output(g.op("SOFTMAX", [y], "probs", [1, 10]))
    return g.build()


def dynamic_batch_tflite(seed: int = 0) -> bytes:
    """x [1, 16] with shape_signature [-1, 16] -> FULLY_CONNECTED 8 -> RELU."""
    rng = np.random.default_rng(seed)
    g = TFLiteGraph()
    x = g.input("x", [1, 16], shape_signature=[-1, 16])
    w, b = _weight_and_bias(g, rng, "fc", "weights", (8, 16))
    y = g.op("FULLY_CONNECTED", [x, w, b], "fc", [1, 8], out_shape_signature=[-1, 8])
    g.output(g.op("RELU", [y], "y", [1, 8], out_shape_signature=[-1, 8]))
    return g.build()


def unsupported_op_tflite() -> bytes:
    """x [1, 8] -> DYNAMIC_UPDATE_SLICE(x, [[1, 2, 3]], start [0, 2]): runs in LiteRT, and
    TVM's TFLite frontend has no converter for it."""
    g = TFLiteGraph()
    x = g.input("x", [1, 8])
    update = g.const("update", np.array([[1.0, 2.0, 3.0]], np.float32))
    start = g.const("start", np.array([0, 2], np.int32))
    g.output(g.op(UNSUPPORTED_BY_TVM, [x, update, start], "y", [1, 8]))
    return g.build()
