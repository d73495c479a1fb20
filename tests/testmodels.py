"""Small ONNX models the tests generate: real graphs of the shapes real exporters produce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _w(rng: np.random.Generator, *shape: int, scale: float | None = None) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    s = scale if scale is not None else np.sqrt(2.0 / max(fan_in, 1))
    return (rng.standard_normal(shape) * s).astype(np.float32)


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    name: str,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def mobilenet_like(seed: int = 0) -> onnx.ModelProto:
    """Conv s2 -> depthwise 3x3 -> pointwise 1x1 -> residual add -> pool -> dense -> softmax."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 16, 3, 3, 3), "c1_w"),
        numpy_helper.from_array(np.zeros(16, np.float32), "c1_b"),
        numpy_helper.from_array(_w(rng, 16, 1, 3, 3), "dw_w"),
        numpy_helper.from_array(_w(rng, 16, 16, 1, 1), "pw_w"),
        numpy_helper.from_array(_w(rng, 16, 10, scale=0.3), "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "c1_w", "c1_b"],
            ["c1"],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            kernel_shape=[3, 3],
        ),
        helper.make_node("Clip", ["c1", "", ""], ["r1"], name="relu6_1"),
        helper.make_node(
            "Conv", ["r1", "dw_w"], ["dw"], group=16, pads=[1, 1, 1, 1], kernel_shape=[3, 3]
        ),
        helper.make_node("Relu", ["dw"], ["r2"]),
        helper.make_node("Conv", ["r2", "pw_w"], ["pw"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["pw", "r1"], ["res"]),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        inits,
        "mobilenet_like",
    )


def mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 64, 128), "w1"),
        numpy_helper.from_array(np.full(128, 0.01, np.float32), "b1"),
        numpy_helper.from_array(_w(rng, 128, 10), "w2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
        "mlp",
    )


def dynamic_batch(seed: int = 0) -> onnx.ModelProto:
    """A dynamic batch dimension and the Shape->Gather->Concat->Reshape chain exporters emit."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 4, 3, 3, 3), "cw"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        numpy_helper.from_array(_w(rng, 4 * 8 * 8, 5), "fw"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "cw"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Concat", ["b", "minus_one"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["r", "new_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fw"], ["scores"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5])],
        inits,
        "dynamic_batch",
    )


def unsupported_op(seed: int = 0) -> onnx.ModelProto:
    """``Det`` in the middle: onnxruntime runs it, TVM's ONNX importer does not."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(_w(rng, 4, 4), "w")]
    nodes = [
        helper.make_node("MatMul", ["m", "w"], ["mw"]),
        helper.make_node("Det", ["mw"], ["d"]),
        helper.make_node("Relu", ["d"], ["out"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        inits,
        "unsupported_op",
    )


def wide_conv(seed: int = 0) -> onnx.ModelProto:
    """Two wide 3x3 convolutions (64 -> 128 -> 128 channels) on an 8x8 map, then a classifier:
    much arithmetic per byte crossing a boundary."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, 128, 64, 3, 3), "w1"),
        numpy_helper.from_array(np.zeros(128, np.float32), "b1"),
        numpy_helper.from_array(_w(rng, 128, 128, 3, 3), "w2"),
        numpy_helper.from_array(np.zeros(128, np.float32), "b2"),
        numpy_helper.from_array(_w(rng, 128, 10, scale=0.1), "fc"),
    ]
    conv = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 64, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
        "wide_conv",
    )


def convnet(channels: int, seed: int = 0, size: int = 64) -> onnx.ModelProto:
    """Two 3x3 convolutions on a ``size`` x ``size`` image; ``channels`` sets the cost (16 ->
    48 is about four times slower). Input ``x:1x3xSIZExSIZE``."""
    rng = np.random.default_rng(seed)
    conv = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])],
        [
            numpy_helper.from_array(_w(rng, channels, 3, 3, 3), "w1"),
            numpy_helper.from_array(_w(rng, channels, channels, 3, 3), "w2"),
        ],
        f"convnet{channels}",
    )


def branch_max(reduce: str = "Max", seed: int = 0) -> onnx.ModelProto:
    """openWakeWord's embedding model in small: two convolutions of the input, each with a
    LeakyReLU (slope 0.2), joined by ONNX's variadic ``reduce`` (Max; Min, Mean, Sum) of the two
    branches and a per-channel constant, then a convolution with a LeakyReLU (slope 0.1).
    Input ``x:1x3x12x12``, output ``1x8x12x12``."""
    rng = np.random.default_rng(seed)
    conv = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["ca"], **conv),
        helper.make_node("LeakyRelu", ["ca"], ["la"], alpha=0.2),
        helper.make_node("Conv", ["x", "wb", "bb"], ["cb"], **conv),
        helper.make_node("LeakyRelu", ["cb"], ["lb"], alpha=0.2),
        helper.make_node(reduce, ["la", "lb", "floor"], ["m"]),
        helper.make_node("Conv", ["m", "wc", "bc"], ["cc"], **conv),
        helper.make_node("LeakyRelu", ["cc"], ["y"], alpha=0.1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])],
        [
            numpy_helper.from_array(_w(rng, 8, 3, 3, 3), "wa"),
            numpy_helper.from_array(_w(rng, 8, scale=0.1), "ba"),
            numpy_helper.from_array(_w(rng, 8, 3, 3, 3), "wb"),
            numpy_helper.from_array(_w(rng, 8, scale=0.1), "bb"),
            numpy_helper.from_array(_w(rng, 1, 8, 1, 1, scale=0.5), "floor"),
            numpy_helper.from_array(_w(rng, 8, 8, 3, 3), "wc"),
            numpy_helper.from_array(_w(rng, 8, scale=0.1), "bc"),
        ],
        f"branch_{reduce.lower()}",
    )


def save(model: onnx.ModelProto, directory: Path, name: str) -> Path:
    path = directory / f"{name}.onnx"
    onnx.save_model(model, str(path))
    return path
