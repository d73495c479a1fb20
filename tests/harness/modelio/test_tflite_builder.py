"""The test-model writer: its models load and run in LiteRT, compute what they claim (checked
against numpy), and import into TVM's Relax TFLite frontend with matching results."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tflite
import tvm
from ai_edge_litert.interpreter import Interpreter

from tflite_builder import (
    UNSUPPORTED_BY_TVM,
    TFLiteGraph,
    cnn_tflite,
    dynamic_batch_tflite,
    mlp_tflite,
    unsupported_op_tflite,
)

TOL = 1e-4


# --- helpers ----------------------------------------------------------------------------------


def run_litert(buf: bytes, x: np.ndarray, *, resize: bool = False) -> np.ndarray:
    interp = Interpreter(model_content=buf)
    (inp,) = interp.get_input_details()
    if resize:
        interp.resize_tensor_input(inp["index"], list(x.shape), strict=True)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    (out,) = interp.get_output_details()
    return np.array(interp.get_tensor(out["index"]))


def constants(buf: bytes) -> dict[str, np.ndarray]:
    """Constant tensors of the model, read back from the flatbuffer by name."""
    model = tflite.Model.GetRootAsModel(buf, 0)
    subgraph = model.Subgraphs(0)
    dtypes = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.INT32: np.int32}
    out = {}
    for i in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(i)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, np.ndarray) and data.size:
            array = np.frombuffer(data.tobytes(), dtype=dtypes[tensor.Type()])
            out[tensor.Name().decode()] = array.reshape(tensor.ShapeAsNumpy())
    return out


def sample(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- numpy reference layers (NHWC, TFLite padding) --------------------------------------------


def tflite_padding(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after): SAME puts the odd padding element after."""
    if padding == "VALID":
        return (size - kernel) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def patches(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: str):
    """[n, oh, ow, kh, kw, c] windows of x (zero padded), and the same windows of a ones mask."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, top, bottom = tflite_padding(h, kh, sh, padding)
    ow, left, right = tflite_padding(w, kw, sw, padding)
    pad = ((0, 0), (top, bottom), (left, right), (0, 0))
    xp, mask = np.pad(x, pad), np.pad(np.ones_like(x), pad)
    out = np.empty((n, oh, ow, kh, kw, c), x.dtype)
    valid = np.empty_like(out)
    for i in range(kh):
        for j in range(kw):
            rows, cols = slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw)
            out[:, :, :, i, j, :] = xp[:, rows, cols, :]
            valid[:, :, :, i, j, :] = mask[:, rows, cols, :]
    return out, valid


def conv2d(x, filt, bias, stride=(1, 1), padding="SAME"):
    p, _ = patches(x, filt.shape[1:3], stride, padding)
    return np.einsum("nhwijc,oijc->nhwo", p, filt) + bias


def depthwise_conv2d(x, filt, bias, stride=(1, 1), padding="SAME", multiplier=1):
    # Output channel k reads input channel k // multiplier.
    p, _ = patches(np.repeat(x, multiplier, axis=3), filt.shape[1:3], stride, padding)
    return np.einsum("nhwijc,ijc->nhwc", p, filt[0]) + bias


def avg_pool(x, size, stride, padding):
    # TFLite averages over the in-bounds elements only.
    p, valid = patches(x, size, stride, padding)
    return p.sum(axis=(3, 4)) / valid.sum(axis=(3, 4))


def relu(x):
    return np.maximum(x, 0)


def relu6(x):
    return np.clip(x, 0, 6)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def fully_connected(x, weights, bias):
    return x @ weights.T + bias


# --- models -----------------------------------------------------------------------------------


def ops_tflite(seed: int = 0) -> bytes:
    """The builder's remaining operators and options: ADD (broadcast, fused RELU), depthwise
    multiplier 2, AVERAGE_POOL_2D with SAME padding, MEAN over axes, RESHAPE by option."""
    rng = np.random.default_rng(seed)
    g = TFLiteGraph()
    x = g.input("x", [1, 6, 6, 4])
    added = g.op(
        "ADD",
        [x, g.const("shift", rng.standard_normal(4).astype(np.float32))],
        "add",
        [1, 6, 6, 4],
        activation="RELU",
    )
    dw = g.op(
        "DEPTHWISE_CONV_2D",
        [
            added,
            g.const("dw/filter", rng.standard_normal((1, 3, 3, 8)).astype(np.float32)),
            g.const("dw/bias", rng.standard_normal(8).astype(np.float32)),
        ],
        "dw",
        [1, 6, 6, 8],
        padding="SAME",
        depth_multiplier=2,
    )
    pool = g.op(
        "AVERAGE_POOL_2D",
        [dw],
        "pool",
        [1, 3, 3, 8],
        filter_size=(3, 3),
        strides=(2, 2),
        padding="SAME",
    )
    mean = g.op("MEAN", [pool, g.const("axes", np.array([1, 2], np.int32))], "mean", [1, 8])
    flat = g.op("RESHAPE", [mean], "flat", [2, 4], new_shape=[2, 4])
    g.output(g.op("RELU", [flat], "y", [2, 4]))
    return g.build()


def ops_reference(buf: bytes, x: np.ndarray) -> np.ndarray:
    c = constants(buf)
    y = relu(x + c["shift"])
    y = depthwise_conv2d(y, c["dw/filter"], c["dw/bias"], padding="SAME", multiplier=2)
    y = avg_pool(y, (3, 3), (2, 2), "SAME")
    y = y.mean(axis=(1, 2))
    return relu(y.reshape(2, 4))


def cnn_reference(buf: bytes, image: np.ndarray) -> np.ndarray:
    c = constants(buf)
    y = relu6(conv2d(image, c["conv1/filter"], c["conv1/bias"], padding="SAME"))
    y = relu(depthwise_conv2d(y, c["dw/filter"], c["dw/bias"], stride=(2, 2), padding="SAME"))
    y = conv2d(y, c["conv2/filter"], c["conv2/bias"], padding="VALID")
    y = avg_pool(y, (8, 8), (8, 8), "VALID").reshape(1, 16)
    return softmax(fully_connected(y, c["fc/weights"], c["fc/bias"]))


def mlp_reference(buf: bytes, x: np.ndarray) -> np.ndarray:
    c = constants(buf)
    y = relu(fully_connected(x, c["fc1/weights"], c["fc1/bias"]))
    return softmax(fully_connected(y, c["fc2/weights"], c["fc2/bias"]))


def dynamic_batch_reference(buf: bytes, x: np.ndarray) -> np.ndarray:
    c = constants(buf)
    return relu(fully_connected(x, c["fc/weights"], c["fc/bias"]))


# name, builder, input name, input shape, numpy reference
MODELS: dict[str, tuple[Any, str, tuple[int, ...], Any]] = {
    "mlp": (mlp_tflite, "x", (1, 16), mlp_reference),
    "cnn": (cnn_tflite, "image", (1, 16, 16, 3), cnn_reference),
    "ops": (ops_tflite, "x", (1, 6, 6, 4), ops_reference),
    "dynamic_batch": (dynamic_batch_tflite, "x", (1, 16), dynamic_batch_reference),
}


# --- the flatbuffer itself --------------------------------------------------------------------


def test_header_tensors_and_opcodes() -> None:
    buf = unsupported_op_tflite()
    assert buf[4:8] == b"TFL3"
    assert tflite.Model.ModelBufferHasIdentifier(buf, 0)
    model = tflite.Model.GetRootAsModel(buf, 0)
    assert model.Version() == 3
    subgraph = model.Subgraphs(0)
    names = [subgraph.Tensors(i).Name().decode() for i in range(subgraph.TensorsLength())]
    assert names == ["x", "update", "start", "y"]
    assert [names[i] for i in subgraph.InputsAsNumpy()] == ["x"]
    assert [names[i] for i in subgraph.OutputsAsNumpy()] == ["y"]
    assert subgraph.Tensors(2).Type() == tflite.TensorType.INT32
    assert model.Buffers(0).DataLength() == 0
    # DYNAMIC_UPDATE_SLICE (151) does not fit the int8 field: it holds the placeholder.
    code = model.OperatorCodes(subgraph.Operators(0).OpcodeIndex())
    assert code.BuiltinCode() == tflite.BuiltinOperator.DYNAMIC_UPDATE_SLICE == 151
    assert code.DeprecatedBuiltinCode() == tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES


def test_constants_round_trip_and_are_16_byte_aligned() -> None:
    g = TFLiteGraph()
    x = g.input("x", [2, 3])
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([7, -1, 3], np.int32),
        "c": np.linspace(-1, 1, 5, dtype=np.float32),
    }
    ids = [g.const(name, array) for name, array in arrays.items()]
    g.output(g.op("ADD", [x, ids[0]], "y", [2, 3]))
    buf = g.build()
    for name, array in constants(buf).items():
        np.testing.assert_array_equal(array, arrays[name])
    model = tflite.Model.GetRootAsModel(buf, 0)
    for i in range(1, model.BuffersLength()):
        table = model.Buffers(i)._tab
        assert table.Vector(table.Offset(4)) % 16 == 0


def test_shape_signature_is_written() -> None:
    subgraph = tflite.Model.GetRootAsModel(dynamic_batch_tflite(), 0).Subgraphs(0)
    x = subgraph.Tensors(int(subgraph.InputsAsNumpy()[0]))
    assert list(x.ShapeAsNumpy()) == [1, 16]
    assert list(x.ShapeSignatureAsNumpy()) == [-1, 16]


def test_builder_rejects_mistakes() -> None:
    g = TFLiteGraph()
    x = g.input("x", [1, 4])
    with pytest.raises(ValueError, match="not supported"):
        g.op("NOT_AN_OP", [x], "y", [1, 4])
    with pytest.raises(TypeError, match="dtype"):
        g.const("w", np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="duplicate"):
        g.input("x", [1, 4])
    with pytest.raises(IndexError):
        g.op("RELU", [5], "y", [1, 4])
    with pytest.raises(TypeError, match="betta"):
        g.op("SOFTMAX", [x], "y", [1, 4], betta=2.0)
    with pytest.raises(TypeError, match="filter_size"):
        g.op("AVERAGE_POOL_2D", [x], "y", [1, 4])
    with pytest.raises(ValueError, match="no outputs"):
        g.build()


# --- LiteRT -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_litert_runs_and_matches_numpy(name: str) -> None:
    build, _, shape, reference = MODELS[name]
    buf = build()
    x = sample(shape)
    y = run_litert(buf, x)
    expected = reference(buf, x.astype(np.float64))
    assert y.shape == expected.shape
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_softmax_outputs_sum_to_one(name: str) -> None:
    build, _, shape, _ = MODELS[name]
    y = run_litert(build(), sample(shape))
    assert y.shape == (1, 10)
    assert (y >= 0).all()
    assert y.sum() == pytest.approx(1.0, abs=1e-5)


def test_seed_changes_weights() -> None:
    assert mlp_tflite(seed=0) == mlp_tflite(seed=0)
    assert mlp_tflite(seed=0) != mlp_tflite(seed=1)


def test_dynamic_batch_resizes_in_litert() -> None:
    buf = dynamic_batch_tflite()
    x = sample((4, 16))
    y = run_litert(buf, x, resize=True)
    assert y.shape == (4, 8)
    np.testing.assert_allclose(y, MODELS["dynamic_batch"][3](buf, x), atol=TOL, rtol=0)


def test_unsupported_op_runs_in_litert() -> None:
    x = sample((1, 8))
    expected = x.copy()
    expected[0, 2:5] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(run_litert(unsupported_op_tflite(), x), expected)


# --- TVM's Relax TFLite frontend --------------------------------------------------------------


def tvm_import(buf: bytes, name: str, shape: tuple[Any, ...]) -> Any:
    from tvm.relax.frontend.tflite import from_tflite

    # from_tflite returns one IRModule; the constants are embedded as relax.const (they are
    # also listed in main's "params" attribute), so main takes only the graph inputs.
    model = tflite.Model.GetRootAsModel(buf, 0)
    return from_tflite(model, shape_dict={name: shape}, dtype_dict={name: "float32"})


def tvm_run(mod: Any, x: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tvm_imports_and_matches_litert(name: str) -> None:
    build, input_name, shape, _ = MODELS[name]
    buf = build()
    mod = tvm_import(buf, input_name, shape)
    assert isinstance(mod, tvm.IRModule)
    assert len(mod["main"].params) == 1
    x = sample(shape)
    np.testing.assert_allclose(tvm_run(mod, x), run_litert(buf, x), atol=TOL, rtol=0)


def test_tvm_imports_dynamic_batch_at_other_static_batch() -> None:
    buf = dynamic_batch_tflite()
    x = sample((4, 16))
    y = tvm_run(tvm_import(buf, "x", (4, 16)), x)
    np.testing.assert_allclose(y, run_litert(buf, x, resize=True), atol=TOL, rtol=0)


def test_tvm_rejects_unsupported_operator() -> None:
    with pytest.raises(tvm.error.OpNotImplemented) as info:
        tvm_import(unsupported_op_tflite(), "x", (1, 8))
    assert str(info.value) == (
        f"The following operators are not supported in frontend TFLite: '{UNSUPPORTED_BY_TVM}'\n"
    )
    assert isinstance(info.value, NotImplementedError)
