"""A model for loading the farm: small enough to build in seconds, slow enough per inference
that a measurement lasts its ``min_seconds`` (the MLPerf Tiny models hit the runner's iteration
cap first). The worker tests and the chaos soak submit it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def two_conv_net(seed: int = 0, size: int = 128, name: str = "two_conv_net") -> onnx.ModelProto:
    """Two 3x3 convolutions (3->16->16) with ReLUs on a ``size`` x ``size`` image, global
    average pool and a 16x10 classifier: milliseconds per inference at 128. Input
    ``image:1x3xSIZExSIZE``, output ``scores:1x10``; weights He-scaled from ``seed``."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        scale = np.sqrt(2.0 / np.prod(shape[1:]))
        return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)

    inits = [
        numpy_helper.from_array(weights(16, 3, 3, 3), "w1"),
        numpy_helper.from_array(weights(16, 16, 3, 3), "w2"),
        numpy_helper.from_array(weights(16, 10), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
