"""The four MLPerf Tiny reference architectures, as ONNX models with seeded random weights.

They are built with ``onnx.helper`` layer by layer after the Keras reference models of MLPerf
Tiny (``benchmark/training/*/keras_model.py``), in NCHW, batch 1, float32, opset 17 and IR
version 10 (onnxruntime 1.31 reads IR up to 13; onnx 1.23 would write 14). Batch
normalization is folded into the preceding convolution or dense layer, as any deployment
does; Keras ``padding="same"`` becomes explicit (possibly asymmetric) pads.

The weights are random, not trained: the models exercise the farm (compilers, backends,
phones, accuracy comparison) with the real layer shapes and costs, not real predictions.
He-style initialization keeps the activations of order one, so outputs neither overflow nor
collapse to a constant.

Approximate multiply-accumulates (from :func:`macs`): ResNet-8 12.5 M, DS-CNN (small) 2.7 M,
MobileNetV1 0.25 at 96x96 7.5 M, the FC autoencoder 0.26 M.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

OPSET = 17
IR_VERSION = 10
BN_EPSILON = 1e-3  # Keras' default

Array = npt.NDArray[np.float32]


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TF ``padding="same"``: output ``ceil(size / stride)``, any odd pad at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Builder:
    """Accumulates nodes and initializers, tracking each activation's (C, H, W) or (F,)."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}

    def const(self, name: str, value: npt.ArrayLike) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def _batch_norm(self, channels: int) -> tuple[Array, Array]:
        """Random but plausible BN statistics, as (scale, shift) to fold into the layer."""
        gamma = self.rng.uniform(0.8, 1.2, channels)
        beta = self.rng.normal(0.0, 0.1, channels)
        mean = self.rng.normal(0.0, 0.1, channels)
        var = self.rng.uniform(0.8, 1.2, channels)
        scale = gamma / np.sqrt(var + BN_EPSILON)
        return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)

    def conv(
        self,
        x: str,
        name: str,
        out_channels: int,
        kernel: tuple[int, int],
        stride: int = 1,
        *,
        depthwise: bool = False,
        bn: bool = True,
        act: str | None = "relu",
    ) -> str:
        c, h, w = self.shapes[x]
        group = c if depthwise else 1
        if depthwise and out_channels != c:
            raise ValueError(f"{name}: a depthwise conv keeps {c} channels")
        fan_in = (c // group) * kernel[0] * kernel[1]
        weight = self.rng.normal(0.0, math.sqrt(2.0 / fan_in), (out_channels, c // group, *kernel))
        bias = np.zeros(out_channels) if bn else self.rng.normal(0.0, 0.05, out_channels)
        if bn:
            scale, shift = self._batch_norm(out_channels)
            weight = weight * scale[:, None, None, None]
            bias = bias * scale + shift
        top, bottom = _same_pads(h, kernel[0], stride)
        left, right = _same_pads(w, kernel[1], stride)
        y = self.node(
            "Conv",
            [x, self.const(f"{name}.weight", weight), self.const(f"{name}.bias", bias)],
            name,
            kernel_shape=list(kernel),
            strides=[stride, stride],
            pads=[top, left, bottom, right],
            group=group,
        )
        self.shapes[y] = (out_channels, -(-h // stride), -(-w // stride))
        return self.activation(y, act)

    def dense(
        self, x: str, name: str, units: int, *, bn: bool = False, act: str | None = None
    ) -> str:
        (k,) = self.shapes[x]
        # He for layers followed by ReLU, LeCun (variance 1 / fan_in) for the linear ones.
        gain = 2.0 if act == "relu" else 1.0
        weight = self.rng.normal(0.0, math.sqrt(gain / k), (k, units))
        bias = np.zeros(units) if bn else self.rng.normal(0.0, 0.05, units)
        if bn:
            scale, shift = self._batch_norm(units)
            weight = weight * scale[None, :]
            bias = bias * scale + shift
        y = self.node(
            "Gemm",
            [x, self.const(f"{name}.weight", weight), self.const(f"{name}.bias", bias)],
            name,
        )
        self.shapes[y] = (units,)
        return self.activation(y, act)

    def activation(self, x: str, act: str | None) -> str:
        if act is None:
            return x
        if act == "relu":
            y = self.node("Relu", [x], f"{x}.relu")
        elif act == "relu6":
            lo, hi = "relu6.min", "relu6.max"
            if not any(t.name == lo for t in self.initializers):
                self.initializers.append(numpy_helper.from_array(np.float32(0.0), lo))
                self.initializers.append(numpy_helper.from_array(np.float32(6.0), hi))
            y = self.node("Clip", [x, lo, hi], f"{x}.relu6")
        else:
            raise ValueError(f"unknown activation {act!r}")
        self.shapes[y] = self.shapes[x]
        return y

    def add_relu(self, a: str, b: str, name: str) -> str:
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"{name}: cannot add {self.shapes[a]} and {self.shapes[b]}")
        y = self.node("Add", [a, b], name)
        self.shapes[y] = self.shapes[a]
        return self.activation(y, "relu")

    def global_pool_flatten(self, x: str) -> str:
        c = self.shapes[x][0]
        pooled = self.node("GlobalAveragePool", [x], "pool")
        y = self.node("Flatten", [pooled], "flatten", axis=1)
        self.shapes[y] = (c,)
        return y

    def model(
        self, input_shape: list[int], last: str, output: str, output_shape: list[int], doc: str
    ) -> onnx.ModelProto:
        if output != last:
            # Rename the last node's output to the public output name.
            for n in self.nodes:
                n.output[:] = [output if o == last else o for o in n.output]
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="edgefarm",
            doc_string=doc,
        )
        return model


def resnet8(seed: int = 0) -> onnx.ModelProto:
    """CIFAR-10 ResNet-8 (image classification): ``input`` [1,3,32,32] -> ``probs`` [1,10]."""
    b = _Builder("resnet8", seed)
    b.shapes["input"] = (3, 32, 32)
    x = b.conv("input", "stem", 16, (3, 3))
    for stack, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        y = b.conv(x, f"stack{stack}.conv1", channels, (3, 3), stride)
        y = b.conv(y, f"stack{stack}.conv2", channels, (3, 3), act=None)
        if stride != 1 or b.shapes[x][0] != channels:
            # The reference's projection shortcut: a 1x1 conv with bias, no BN.
            x = b.conv(x, f"stack{stack}.shortcut", channels, (1, 1), stride, bn=False, act=None)
        x = b.add_relu(x, y, f"stack{stack}.add")
    x = b.global_pool_flatten(x)
    logits = b.dense(x, "fc", 10)
    probs = b.node("Softmax", [logits], "softmax", axis=-1)
    return b.model([1, 3, 32, 32], probs, "probs", [1, 10], "MLPerf Tiny ResNet-8, random weights")


def ds_cnn(seed: int = 0) -> onnx.ModelProto:
    """DS-CNN small (keyword spotting): MFCC ``input`` [1,1,49,10] -> ``probs`` [1,12]."""
    b = _Builder("ds_cnn", seed)
    b.shapes["input"] = (1, 49, 10)
    x = b.conv("input", "stem", 64, (10, 4), 2)
    for i in range(1, 5):
        x = b.conv(x, f"block{i}.depthwise", 64, (3, 3), depthwise=True)
        x = b.conv(x, f"block{i}.pointwise", 64, (1, 1))
    x = b.global_pool_flatten(x)
    logits = b.dense(x, "fc", 12)
    probs = b.node("Softmax", [logits], "softmax", axis=-1)
    return b.model([1, 1, 49, 10], probs, "probs", [1, 12], "MLPerf Tiny DS-CNN, random weights")


# MobileNetV1 (Howard et al. 2017, table 1): pointwise channels at alpha 1, and strides.
_MOBILENET_V1_BLOCKS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


def mobilenet_v1_025(seed: int = 0, resolution: int = 96) -> onnx.ModelProto:
    """MobileNetV1 alpha 0.25 (visual wake words): ``input`` [1,3,R,R] -> ``probs`` [1,2]."""
    if resolution < 32:
        raise ValueError(f"resolution must be at least 32, got {resolution}")
    alpha = 0.25
    b = _Builder("mobilenet_v1_025", seed)
    b.shapes["input"] = (3, resolution, resolution)
    x = b.conv("input", "stem", int(32 * alpha), (3, 3), 2, act="relu6")
    for i, (channels, stride) in enumerate(_MOBILENET_V1_BLOCKS, start=1):
        c = b.shapes[x][0]
        x = b.conv(x, f"block{i}.depthwise", c, (3, 3), stride, depthwise=True, act="relu6")
        x = b.conv(x, f"block{i}.pointwise", int(channels * alpha), (1, 1), act="relu6")
    x = b.global_pool_flatten(x)
    logits = b.dense(x, "fc", 2)
    probs = b.node("Softmax", [logits], "softmax", axis=-1)
    return b.model(
        [1, 3, resolution, resolution],
        probs,
        "probs",
        [1, 2],
        f"MLPerf Tiny MobileNetV1 0.25 at {resolution}x{resolution}, random weights",
    )


def autoencoder(seed: int = 0) -> onnx.ModelProto:
    """FC autoencoder (anomaly detection): ``input`` [1,640] -> ``reconstruction`` [1,640]."""
    b = _Builder("autoencoder", seed)
    b.shapes["input"] = (640,)
    x = "input"
    for i in range(1, 5):
        x = b.dense(x, f"encoder{i}", 128, bn=True, act="relu")
    x = b.dense(x, "bottleneck", 8, bn=True, act="relu")
    for i in range(1, 5):
        x = b.dense(x, f"decoder{i}", 128, bn=True, act="relu")
    x = b.dense(x, "output", 640)
    return b.model(
        [1, 640], x, "reconstruction", [1, 640], "MLPerf Tiny FC autoencoder, random weights"
    )


EXAMPLES: dict[str, Callable[[int], onnx.ModelProto]] = {
    "resnet8": resnet8,
    "ds-cnn": ds_cnn,
    "mobilenet-v1-0.25": mobilenet_v1_025,
    "autoencoder": autoencoder,
}
"""Example name -> generator taking a seed."""


def build_example(name: str, seed: int = 0) -> onnx.ModelProto:
    """The example model called ``name`` (a key of :data:`EXAMPLES`) with weights from ``seed``."""
    try:
        make = EXAMPLES[name]
    except KeyError:
        raise ValueError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}") from None
    return make(seed)


def example_bytes(name: str, seed: int = 0) -> bytes:
    """The serialized example; the same bytes for the same name and seed."""
    data: bytes = build_example(name, seed).SerializeToString(deterministic=True)
    return data


def write_example(name: str, directory: str | Path, *, seed: int = 0) -> Path:
    """Write ``<directory>/<name>.onnx`` (creating the directory) and return its path."""
    data = example_bytes(name, seed)
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    path.write_bytes(data)
    return path


def macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one inference: Conv, Gemm and MatMul nodes only.

    Shapes come from ONNX shape inference, so the model's inputs need static shapes.
    """
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]
            total += math.prod(shapes[node.output[0]]) * math.prod(weight[1:])
        elif node.op_type == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            a_shape = shapes[node.input[0]]
            k = a_shape[0] if trans_a else a_shape[1]
            total += math.prod(shapes[node.output[0]]) * k
        elif node.op_type == "MatMul":
            total += math.prod(shapes[node.output[0]]) * shapes[node.input[0]][-1]
    return total
