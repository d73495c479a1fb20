"""Channels-last convolutions in tuned builds (harness.compile.layout): ONNX's Clip becomes
Relax's maximum/minimum so that ConvertLayout moves it with its convolution; the lowered
model has one transpose in and one out, its ReLU6s fused into their convolutions, and computes
what onnxruntime computes. A call_tir that only shares TE's name is left alone. ONNX's Max and
Min of several tensors and LeakyReLU (openWakeWord's embedding model) are rewritten into forms
ConvertLayout moves; where it still fails, the module stays NCHW."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import testmodels


def relu6_blocks(seed: int = 0) -> Any:
    """Conv 3x3 s2 -> ReLU6 -> depthwise 3x3 -> ReLU6 -> pointwise 1x1 -> ReLU6 (NCHW)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(16, 3, 3, 3), "c_w"),
        numpy_helper.from_array(w(16), "c_b"),
        numpy_helper.from_array(w(16, 1, 3, 3), "dw_w"),
        numpy_helper.from_array(w(16), "dw_b"),
        numpy_helper.from_array(w(24, 16, 1, 1), "pw_w"),
        numpy_helper.from_array(w(24), "pw_b"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    conv3 = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "c_w", "c_b"], ["c"], strides=[2, 2], **conv3),
        helper.make_node("Clip", ["c", "lo", "hi"], ["c6"]),
        helper.make_node("Conv", ["c6", "dw_w", "dw_b"], ["dw"], group=16, **conv3),
        helper.make_node("Clip", ["dw", "lo", "hi"], ["dw6"]),
        helper.make_node("Conv", ["dw6", "pw_w", "pw_b"], ["pw"], kernel_shape=[1, 1]),
        helper.make_node("Clip", ["pw", "lo", "hi"], ["y"]),
    ]
    return testmodels.make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 10, 10])],
        inits,
        "relu6_blocks",
    )


def _relax(model: Any) -> Any:
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(model, keep_params_in_input=False)


def _calls(func: Any) -> list[Any]:
    from tvm import relax

    found: list[Any] = []
    relax.analysis.post_order_visit(
        func.body, lambda e: found.append(e) if isinstance(e, relax.Call) else None
    )
    return found


def _ops(mod: Any) -> list[str]:
    import tvm

    return [c.op.name for c in _calls(mod["main"]) if isinstance(c.op, tvm.ir.Op)]


def _lowered_matches_onnxruntime(mod: Any, model: Any, tmp_path: Path) -> list[str]:
    """The names of ``mod``'s functions as a tuning lowers it, after checking that the lowered
    module computes what onnxruntime computes of ``model``."""
    import tvm

    from harness.compile.tuned import tuning_prefix

    lowered = tuning_prefix(mod, tvm.target.Target({"kind": "llvm"}))
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)
    path = testmodels.save(model, tmp_path, model.graph.name)
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(_run(lowered, x), expected, rtol=1e-4, atol=1e-4)
    return sorted(gv.name_hint for gv in lowered.functions if gv.name_hint != "main")


def _run(mod: Any, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    target = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return np.asarray(vm["main"](tvm.runtime.tensor(x)).numpy())


def test_convolutions_go_channels_last_with_their_relu6(tmp_path: Path) -> None:
    import tvm

    from harness.compile.layout import channels_last, count_data_transposes
    from harness.compile.tuned import tuning_prefix

    model = relu6_blocks()
    mod = _relax(model)
    converted = channels_last(mod)
    calls = _calls(converted["main"])
    ops = [c.op.name for c in calls if isinstance(c.op, tvm.ir.Op)]
    assert "relax.call_tir" not in ops  # the Clips are Relax operators now
    assert ops.count("relax.maximum") == 3 and ops.count("relax.minimum") == 3
    convs = [c for c in calls if isinstance(c.op, tvm.ir.Op) and c.op.name == "relax.nn.conv2d"]
    assert len(convs) == 3
    assert all((c.attrs.data_layout, c.attrs.kernel_layout) == ("NHWC", "OHWI") for c in convs)

    # Data is transposed twice, in and out; the weights' and biases' transposes are not
    # counted (the build folds them), so three convolutions repay one stretch.
    assert count_data_transposes(mod) == 0 and count_data_transposes(converted) == 2
    assert sum(c.op.name == "relax.permute_dims" for c in calls if isinstance(c.op, tvm.ir.Op)) > 2

    target = tvm.target.Target({"kind": "llvm"})
    lowered = tuning_prefix(mod, target)
    names = sorted(gv.name_hint for gv, f in lowered.functions.items() if gv.name_hint != "main")
    # One transpose in, one out; each ReLU6 fused into its convolution, nothing between.
    assert len(names) == 5, names
    fused = [n for n in names if n.startswith("fused_conv2d") and "maximum" in n and "minimum" in n]
    assert len(fused) == 3, names
    assert sum("transpose" in n for n in names) == 2, names

    x = np.random.default_rng(1).standard_normal((1, 3, 20, 20)).astype(np.float32)
    path = testmodels.save(model, tmp_path, "relu6")
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(_run(lowered, x), expected, rtol=1e-4, atol=1e-4)


def test_a_call_tir_only_named_maximum_is_left_alone() -> None:
    """A PrimFunc called ``maximum`` that is not TE's maximum (here: max(x, y) + 1) stays a
    call_tir, and the module computes what it did."""
    import tvm
    from tvm import relax, te

    from harness.compile.layout import clamps_as_relax_ops

    def max_plus_one(a: Any, b: Any) -> Any:
        return te.compute(a.shape, lambda i, j: te.max(a[i, j], b()) + 1.0, name="T_maximum")

    bb = relax.BlockBuilder()
    x_var = relax.Var("x", relax.TensorType([2, 3], "float32"))
    with bb.function("main", [x_var]):
        with bb.dataflow():
            zero = relax.const(0.0, "float32")
            y = bb.emit_output(bb.emit_te(max_plus_one, x_var, zero, primfunc_name_hint="maximum"))
        bb.emit_func_output(y)
    module = bb.get()
    assert "maximum" in [gv.name_hint for gv in module.functions]

    kept = clamps_as_relax_ops(module)
    ops = [c.op.name for c in _calls(kept["main"]) if isinstance(c.op, tvm.ir.Op)]
    assert ops == ["relax.call_tir"]
    x = np.array([[-1, 0.5, 2], [3, -4, 0]], np.float32)
    np.testing.assert_allclose(_run(kept, x), np.maximum(x, 0) + 1)
    assert isinstance(kept["maximum"], tvm.tirx.PrimFunc)


@pytest.mark.parametrize("reduce", ["Max", "Min"])
def test_a_max_of_branches_and_leaky_relus_go_channels_last(tmp_path: Path, reduce: str) -> None:
    """TVM's importer writes ONNX's Max of several tensors as the inputs broadcast, stacked
    into a 5-D tensor and reduced (TVM 0.27's ConvertLayout failed on it: "Invalid SLayout",
    and so did every tuning of openWakeWord's embedding model), and ConvertLayout has no rule
    for LeakyReLU (each would cost two transposes). Rewritten, the model is one stretch of
    NHWC with everything fused into its convolutions."""
    import tvm

    from harness.compile.layout import channels_last, count_data_transposes

    model = testmodels.branch_max(reduce)
    mod = _relax(model)
    before = _ops(mod)
    assert "relax.stack" in before and before.count("relax.nn.leakyrelu") == 3
    converted = channels_last(mod)
    ops = _ops(converted)
    assert "relax.stack" not in ops and "relax.nn.leakyrelu" not in ops
    # Three LeakyReLUs as maximum(x, x * slope); the reduction of three tensors as two
    # pairwise operators.
    assert ops.count("relax.multiply") == 3
    if reduce == "Max":
        assert ops.count("relax.maximum") == 3 + 2
    else:
        assert (ops.count("relax.maximum"), ops.count("relax.minimum")) == (3, 2)
    convs = [c for c in _calls(converted["main"]) if isinstance(c.op, tvm.ir.Op)]
    convs = [c for c in convs if c.op.name == "relax.nn.conv2d"]
    assert [(c.attrs.data_layout, c.attrs.kernel_layout) for c in convs] == [("NHWC", "OHWI")] * 3
    # The input transposed for each of its two convolutions, the output once: one stretch.
    assert count_data_transposes(converted) == 3

    names = _lowered_matches_onnxruntime(mod, model, tmp_path)
    assert not [n for n in names if "stack" in n or "leaky" in n], names
    # Each convolution with its bias and LeakyReLU; the reduction fused into the second
    # branch's (or standing alone): never a transpose between two convolutions.
    assert sum(n.startswith("fused_conv2d") for n in names) == 3, names
    assert sum("transpose" in n for n in names) <= 3, names


def test_a_layout_tvm_cannot_infer_leaves_the_module_nchw(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ONNX's Mean of several tensors is imported stacked too, and not rewritten (a mean is
    not exact pairwise): ConvertLayout fails on it, and the module stays NCHW, saying so,
    instead of failing the tuning or the build."""
    from harness.compile.layout import channels_last

    model = testmodels.branch_max("Mean")
    mod = _relax(model)
    with caplog.at_level(logging.WARNING, logger="harness.compile.layout"):
        kept = channels_last(mod)
    assert kept is mod
    assert "convolutions stay NCHW: TVM's ConvertLayout failed" in caplog.text
    names = _lowered_matches_onnxruntime(mod, model, tmp_path)
    assert not [n for n in names if "transpose" in n], names


def test_only_the_elementwise_spellings_and_a_leaky_relu_only_where_its_slope_allows() -> None:
    """The tuned build takes the BYOC normalisation's elementwise spellings alone: a squeeze
    stays (a reshape would be another workload); maximum(x, x * slope) is LeakyReLU for a
    slope in [0, 1], so a steeper one stays too."""
    from tvm import relax

    from harness.byoc.normalize import ELEMENTWISE_SPELLINGS, spell_for_tables

    bb = relax.BlockBuilder()
    x_var = relax.Var("x", relax.TensorType([2, 1, 3], "float32"))
    with bb.function("main", [x_var]):
        with bb.dataflow():
            squeezed = bb.emit(relax.op.squeeze(x_var, axis=[1]))
            gentle = bb.emit(relax.op.nn.leakyrelu(squeezed, 0.3))
            y = bb.emit_output(relax.op.nn.leakyrelu(gentle, 1.5))
        bb.emit_func_output(y)
    module = bb.get()

    spelled = relax.transform.DeadCodeElimination()(
        spell_for_tables(module, only=ELEMENTWISE_SPELLINGS)
    )
    assert _ops(spelled) == [
        "relax.squeeze",
        "relax.multiply",
        "relax.maximum",
        "relax.nn.leakyrelu",
    ]
    assert "relax.reshape" in _ops(spell_for_tables(module))  # all of them: squeeze too
    x = np.array([[[-2, -0.5, 0]], [[0.25, 3, -7]]], np.float32)
    gentle_np = np.where(x > 0, x, x * np.float32(0.3))[:, 0, :]
    expected = np.where(gentle_np > 0, gentle_np, gentle_np * np.float32(1.5))
    np.testing.assert_array_equal(_run(spelled, x), expected)
    np.testing.assert_array_equal(_run(module, x), expected)
