"""Reference outputs from onnxruntime and LiteRT, on small models built here."""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as tfl
from onnx import TensorProto, helper, numpy_helper

from harness.errors import JobError
from harness.measure.reference import onnx_reference, tflite_input_aliases, tflite_reference


def _onnx_model() -> bytes:
    """y = relu(a + w), z = a * b (two inputs, two outputs)."""
    w = numpy_helper.from_array(np.array([[1.0, -2.0, 0.5]], np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "w"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
            helper.make_node("Mul", ["a", "b"], ["z"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3]),
        ],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    data: bytes = model.SerializeToString()
    return data


A = np.array([[0.5, 1.0, -1.0]], np.float32)
B = np.array([[2.0, 3.0, 4.0]], np.float32)


def test_onnx_reference_outputs_in_graph_order() -> None:
    y, z = onnx_reference(_onnx_model(), {"b": B, "a": A})
    np.testing.assert_allclose(y, np.maximum(A + np.array([[1.0, -2.0, 0.5]], np.float32), 0.0))
    np.testing.assert_allclose(z, A * B)


def test_onnx_reference_name_errors() -> None:
    with pytest.raises(JobError, match=r"missing \['b'\]") as info:
        onnx_reference(_onnx_model(), {"a": A})
    assert info.value.stage == "compare"
    with pytest.raises(JobError, match=r"unexpected \['c'\]"):
        onnx_reference(_onnx_model(), {"a": A, "b": B, "c": B})


def test_onnx_reference_runtime_errors_are_one_line() -> None:
    with pytest.raises(JobError, match="onnxruntime cannot load") as info:
        onnx_reference(b"definitely not onnx", {})
    assert "\n" not in info.value.message
    with pytest.raises(JobError, match="onnxruntime failed to run") as info:
        onnx_reference(_onnx_model(), {"a": A.astype(np.float64), "b": B})
    assert info.value.stage == "compare"
    assert "\n" not in info.value.message


def _tflite_model(*, signature: bool) -> bytes:
    """sum = a + b, scaled = a * [2, 3, 4] with TF-converter-style tensor names."""
    const = np.array([[2.0, 3.0, 4.0]], np.float32)
    buffers = [tfl.BufferT() for _ in range(5)]
    buffers[3].data = np.frombuffer(const.tobytes(), np.uint8)

    def tensor(name: str, buffer: int) -> Any:
        t = tfl.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, 3], tfl.TensorType.FLOAT32, buffer
        return t

    tensors = [
        tensor("serving_default_a:0", 1),
        tensor("serving_default_b:0", 2),
        tensor("scale", 3),
        tensor("StatefulPartitionedCall:0", 4),
        tensor("StatefulPartitionedCall:1", 0),
    ]

    def opcode(code: int) -> Any:
        c = tfl.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, code, 1
        return c

    def op(index: int, inputs: list[int], output: int, kind: int, options: Any) -> Any:
        o = tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = index, inputs, [output]
        o.builtinOptionsType, o.builtinOptions = kind, options
        return o

    subgraph = tfl.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs, subgraph.outputs = [0, 1], [3, 4]
    subgraph.operators = [
        op(0, [0, 1], 3, tfl.BuiltinOptions.AddOptions, tfl.AddOptionsT()),
        op(1, [0, 2], 4, tfl.BuiltinOptions.MulOptions, tfl.MulOptionsT()),
    ]
    subgraph.name = "main"
    model = tfl.ModelT()
    model.version = 3
    model.operatorCodes = [opcode(tfl.BuiltinOperator.ADD), opcode(tfl.BuiltinOperator.MUL)]
    model.subgraphs = [subgraph]
    model.buffers = buffers
    if signature:

        def tensor_map(name: str, index: int) -> Any:
            m = tfl.TensorMapT()
            m.name, m.tensorIndex = name, index
            return m

        sig = tfl.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.inputs = [tensor_map("first", 0), tensor_map("second", 1)]
        sig.outputs = [tensor_map("sum", 3), tensor_map("scaled", 4)]
        model.signatureDefs = [sig]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_tflite_aliases() -> None:
    assert tflite_input_aliases("serving_default_image:0") == [
        "serving_default_image:0",
        "serving_default_image",
        "image",
    ]
    assert tflite_input_aliases("x") == ["x"]


@pytest.mark.parametrize(
    "names",
    [
        ("serving_default_a:0", "serving_default_b:0"),
        ("serving_default_a", "serving_default_b"),
        ("a", "b"),
    ],
)
def test_tflite_reference_by_tensor_names(names: tuple[str, str]) -> None:
    total, scaled = tflite_reference(_tflite_model(signature=False), {names[1]: B, names[0]: A})
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(scaled, A * [[2.0, 3.0, 4.0]])


def test_tflite_reference_by_signature_names() -> None:
    total, scaled = tflite_reference(_tflite_model(signature=True), {"first": A, "second": B})
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(scaled, A * [[2.0, 3.0, 4.0]])


def test_tflite_reference_resizes_batch() -> None:
    a = np.concatenate([A, 2 * A])
    b = np.concatenate([B, B])
    total, _ = tflite_reference(_tflite_model(signature=False), {"a": a, "b": b})
    assert total.shape == (2, 3)
    np.testing.assert_array_equal(total, a + b)


def test_tflite_reference_errors() -> None:
    model = _tflite_model(signature=False)
    with pytest.raises(JobError, match=r"no value for \['serving_default_b:0'\]") as info:
        tflite_reference(model, {"a": A})
    assert info.value.stage == "compare"
    with pytest.raises(JobError, match=r"unexpected \['c'\]"):
        tflite_reference(model, {"a": A, "b": B, "c": B})
    with pytest.raises(JobError, match="is float32, given float64"):
        tflite_reference(model, {"a": A.astype(np.float64), "b": B})
    with pytest.raises(JobError, match="LiteRT cannot load") as info:
        tflite_reference(b"\x00" * 64, {})
    assert "\n" not in info.value.message
