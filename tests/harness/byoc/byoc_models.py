"""ONNX models for the BYOC tests: each exercises one part of the pattern tables."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from testmodels import make_model as _model


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _f32(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def transposed_matmul(seed: int = 0) -> onnx.ModelProto:
    """Attention-like q @ k^T (a transposed, non-constant operand) -> softmax -> a Gemm whose
    weight is transposed (transB=1)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 5, 6), "w"),
        numpy_helper.from_array(_w(rng, 5), "b"),
        numpy_helper.from_array(np.array([4, 6], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
        helper.make_node("Reshape", ["attn", "flat"], ["attn2"]),
        helper.make_node("Gemm", ["attn2", "w", "b"], ["y"], transB=1),
    ]
    return _model(
        nodes,
        [_f32("q", [1, 4, 8]), _f32("k", [1, 6, 8])],
        [_f32("y", [4, 5])],
        inits,
        "transposed_matmul",
    )


def sin_in_the_middle(seed: int = 0) -> onnx.ModelProto:
    """dense -> Sin (in neither table) -> dense: two offloaded subgraphs around a CPU op."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 16, 32), "w1"),
        numpy_helper.from_array(_w(rng, 32), "b1"),
        numpy_helper.from_array(_w(rng, 32, 8), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Sin", ["hb"], ["s"]),
        helper.make_node("MatMul", ["s", "w2"], ["o"]),
        helper.make_node("Relu", ["o"], ["y"]),
    ]
    return _model(nodes, [_f32("x", [1, 16])], [_f32("y", [1, 8])], inits, "sin_in_the_middle")


def pool_concat(seed: int = 0) -> onnx.ModelProto:
    """conv+bias+relu -> max pool -> (1x1 conv | 3x3 average pool) -> concat -> global average
    pool -> dense -> sigmoid."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 8, 3, 3, 3), "c1_w"),
        numpy_helper.from_array(_w(rng, 8), "c1_b"),
        numpy_helper.from_array(_w(rng, 4, 8, 1, 1), "c2_w"),
        numpy_helper.from_array(_w(rng, 12, 3), "fc_w"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["x", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2_w"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("AveragePool", ["p1"], ["a1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c2", "a1"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc_w"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["y"]),
    ]
    return _model(nodes, [_f32("x", [1, 3, 16, 16])], [_f32("y", [1, 3])], inits, "pool_concat")


def nothing_to_offload() -> onnx.ModelProto:
    """Sin and Cos only: neither table covers them."""
    nodes = [
        helper.make_node("Sin", ["x"], ["s"]),
        helper.make_node("Cos", ["s"], ["y"]),
    ]
    return _model(nodes, [_f32("x", [1, 8])], [_f32("y", [1, 8])], [], "nothing_to_offload")


def int_add() -> onnx.ModelProto:
    """An int32 Add: in NNAPI's table, but the codegen emits float32 only."""
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    ints = [helper.make_tensor_value_info(n, TensorProto.INT32, [1, 4]) for n in ("a", "b")]
    return _model(
        nodes, ints, [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])], [], "int_add"
    )


def repeated_block(seed: int = 0) -> onnx.ModelProto:
    """The same conv+bias+relu block twice, with different weights, a Sin (offloaded by
    neither API) between them: two offloaded subgraphs of one shape, so partitioning makes
    them one function called at two call sites with different weights. A trained network's
    repeated blocks (MobileNetV3's, between their hard-swishes) are like this."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 8, 8, 3, 3), "w1"),
        numpy_helper.from_array(_w(rng, 8), "b1"),
        numpy_helper.from_array(_w(rng, 8, 8, 3, 3), "w2"),
        numpy_helper.from_array(_w(rng, 8), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Sin", ["r1"], ["s"]),
        helper.make_node("Conv", ["s", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    return _model(
        nodes, [_f32("x", [1, 8, 6, 6])], [_f32("y", [1, 8, 6, 6])], inits, "repeated_block"
    )


def sigmoid_after_sin(seed: int = 0) -> onnx.ModelProto:
    """dense -> Sin -> dense -> Sigmoid: two offloaded subgraphs, the second alone holding a
    LOGISTIC (where a broken LOGISTIC kernel must be found)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 16, 32), "w1"),
        numpy_helper.from_array(_w(rng, 32, 8), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Sin", ["h"], ["s"]),
        helper.make_node("MatMul", ["s", "w2"], ["o"]),
        helper.make_node("Sigmoid", ["o"], ["y"]),
    ]
    return _model(nodes, [_f32("x", [1, 16])], [_f32("y", [1, 8])], inits, "sigmoid_after_sin")


def hard_activations(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV3's activations as ONNX writes them: Clip with its bounds as inputs (relu6, a
    clip to [-0.5, 2], one with only an upper bound), hard-swish spelled out as
    Add/Clip/Mul/Div (as PaddleOCR's models are) and as the HardSwish operator, HardSigmoid in
    a squeeze-excite gate."""
    rng = np.random.default_rng(seed)

    def scalar(name: str, value: float) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, np.float32), name)

    inits = [
        numpy_helper.from_array(_w(rng, 8, 8, 3, 3), "w1"),
        numpy_helper.from_array(_w(rng, 8), "b1"),
        numpy_helper.from_array(_w(rng, 8, 8, 1, 1, scale=1.0), "w2"),
        numpy_helper.from_array(_w(rng, 8), "b2"),
        numpy_helper.from_array(_w(rng, 8, 1, 3, 3, scale=1.0), "w3"),
        numpy_helper.from_array(_w(rng, 8), "b3"),
        numpy_helper.from_array(_w(rng, 8, 8, 1, 1, scale=1.0), "w4"),
        numpy_helper.from_array(_w(rng, 8), "b4"),
        scalar("zero", 0.0),
        scalar("three", 3.0),
        scalar("six", 6.0),
        scalar("lo", -0.5),
        scalar("hi", 2.0),
        scalar("cap", 1.5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Clip", ["c1", "zero", "six"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        # x * clip(x + 3, 0, 6) / 6, spelled out
        helper.make_node("Add", ["c2", "three"], ["a2"]),
        helper.make_node("Clip", ["a2", "zero", "six"], ["k2"]),
        helper.make_node("Mul", ["c2", "k2"], ["m2"]),
        helper.make_node("Div", ["m2", "six"], ["h2"]),
        helper.make_node(
            "Conv", ["h2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], group=8
        ),
        helper.make_node("HardSwish", ["c3"], ["h3"]),
        helper.make_node("Clip", ["h3", "lo", "hi"], ["k3"]),
        helper.make_node("GlobalAveragePool", ["k3"], ["g"]),
        helper.make_node("Conv", ["g", "w4", "b4"], ["s"], kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["s"], ["gate"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["k3", "gate"], ["se"]),
        helper.make_node("Clip", ["se", "", "cap"], ["y"]),
    ]
    return _model(
        nodes, [_f32("x", [1, 8, 6, 6])], [_f32("y", [1, 8, 6, 6])], inits, "hard_activations"
    )


def reflect_pad(seed: int = 0) -> onnx.ModelProto:
    """A reflecting Pad (TVM's importer lowers it to call_tir of a TIR mirror_pad, which no
    table offloads) before a conv+relu."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 4, 4, 3, 3), "w"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    return _model(nodes, [_f32("x", [1, 4, 6, 6])], [_f32("y", [1, 4, 6, 6])], inits, "reflect_pad")


def dilated_convs(seed: int = 0, *, offload_between: bool = False) -> onnx.ModelProto:
    """Two dilated 3x3 convolutions -> ReLU -> flatten -> dense. NNAPI takes dilation from
    feature level 3: at level 2 both convolutions stay on the CPU, one after the other, and
    the rest is offloaded. ``offload_between``: a bias and a ReLU between the convolutions,
    offloaded too (each convolution then alone between two offloaded subgraphs)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 8, 4, 3, 3), "w1"),
        numpy_helper.from_array(_w(rng, 8, 1, 1), "b1"),
        numpy_helper.from_array(_w(rng, 8, 8, 3, 3), "w2"),
        numpy_helper.from_array(np.array([1, 8 * 12 * 12], np.int64), "flat"),
        numpy_helper.from_array(_w(rng, 8 * 12 * 12, 10, scale=0.05), "w3"),
    ]
    conv = {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 2, 2, 2]}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], **conv)]
    if offload_between:
        nodes += [
            helper.make_node("Add", ["c1", "b1"], ["a1"]),
            helper.make_node("Relu", ["a1"], ["r1"]),
        ]
    nodes += [
        helper.make_node("Conv", ["r1" if offload_between else "c1", "w2"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Reshape", ["r2", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["y"]),
    ]
    return _model(nodes, [_f32("x", [1, 4, 12, 12])], [_f32("y", [1, 10])], inits, "dilated_convs")
