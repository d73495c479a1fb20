"""The APIs' rules (harness.byoc.api_rules), kept by the translator and enforced by the reference
driver: per operation, a small model through the translator whose every emitted operation
conforms and builds through the real driver at the target's level; per kind of rule, a model
that breaks it and the driver's error code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nn_driver
import numpy as np
import onnx
import pytest
from nn_driver import BAD_DATA, NO_ERROR, UNEXPECTED_NULL, Driver, Model
from onnx import TensorProto, helper, numpy_helper

from harness.byoc import partition
from harness.byoc.api_rules import RULES, OperandInfo, check
from harness.byoc.codegen import build_model
from harness.byoc.dialect import DIALECTS
from harness.byoc.nnmodel import NNModel
from harness.modelio import load, to_relax

import testmodels

X4 = [1, 4, 6, 6]


def _f32(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _w(*shape: int) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(shape) * 0.3).astype(np.float32)


def _one(
    node: onnx.NodeProto,
    inputs: dict[str, list[int]],
    out: list[int],
    inits: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    return testmodels.make_model(
        [node],
        [_f32(n, s) for n, s in inputs.items()],
        [_f32("y", out)],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
        node.op_type.lower(),
    )


def _node(op: str, inputs: list[str], **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, ["y"], **attrs)


# (operation expected, level, model): one model per operation the translator emits.
CASES: list[tuple[str, int, onnx.ModelProto]] = [
    ("ADD", 1, _one(_node("Add", ["x", "z"]), {"x": X4, "z": X4}, X4)),
    ("SUB", 2, _one(_node("Sub", ["x", "z"]), {"x": X4, "z": X4}, X4)),
    ("MUL", 1, _one(_node("Mul", ["x", "z"]), {"x": X4, "z": X4}, X4)),
    ("DIV", 2, _one(_node("Div", ["x", "z"]), {"x": X4, "z": X4}, X4)),
    ("POW", 3, _one(_node("Pow", ["x", "z"]), {"x": X4, "z": X4}, X4)),
    (
        "CONV_2D",
        1,
        _one(
            _node("Conv", ["x", "w"], pads=[1, 1, 1, 1]),
            {"x": X4},
            [1, 8, 6, 6],
            {"w": _w(8, 4, 3, 3)},
        ),
    ),
    (
        "CONV_2D",
        3,
        _one(
            _node("Conv", ["x", "w"], pads=[2, 2, 2, 2], dilations=[2, 2]),
            {"x": X4},
            [1, 8, 6, 6],
            {"w": _w(8, 4, 3, 3)},
        ),
    ),
    (
        "DEPTHWISE_CONV_2D",
        1,
        _one(_node("Conv", ["x", "w"], group=4), {"x": X4}, [1, 4, 4, 4], {"w": _w(4, 1, 3, 3)}),
    ),
    (
        "GROUPED_CONV_2D",
        3,
        _one(_node("Conv", ["x", "w"], group=2), {"x": X4}, [1, 8, 4, 4], {"w": _w(8, 2, 3, 3)}),
    ),
    (
        "AVERAGE_POOL_2D",
        1,
        _one(
            _node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2]),
            {"x": X4},
            [1, 4, 3, 3],
        ),
    ),
    (
        "MAX_POOL_2D",
        1,
        _one(_node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2]), {"x": X4}, [1, 4, 3, 3]),
    ),
    ("FULLY_CONNECTED", 1, _one(_node("Gemm", ["x", "w"]), {"x": [2, 8]}, [2, 5], {"w": _w(8, 5)})),
    (
        "BATCH_MATMUL",
        6,
        _one(_node("MatMul", ["x", "z"]), {"x": [2, 3, 8], "z": [2, 8, 5]}, [2, 3, 5]),
    ),
    ("RELU", 1, _one(_node("Relu", ["x"]), {"x": X4}, X4)),
    ("LOGISTIC", 1, _one(_node("Sigmoid", ["x"]), {"x": X4}, X4)),
    ("TANH", 1, _one(_node("Tanh", ["x"]), {"x": X4}, X4)),
    ("FLOOR", 1, _one(_node("Floor", ["x"]), {"x": X4}, X4)),
    ("ABS", 3, _one(_node("Abs", ["x"]), {"x": X4}, X4)),
    ("EXP", 3, _one(_node("Exp", ["x"]), {"x": X4}, X4)),
    ("LOG", 3, _one(_node("Log", ["x"]), {"x": X4}, X4)),
    ("NEG", 3, _one(_node("Neg", ["x"]), {"x": X4}, X4)),
    ("SQRT", 3, _one(_node("Sqrt", ["x"]), {"x": X4}, X4)),
    ("HARD_SWISH", 4, _one(_node("HardSwish", ["x"]), {"x": X4}, X4)),
    ("SOFTMAX", 1, _one(_node("Softmax", ["x"], axis=-1), {"x": [2, 8]}, [2, 8])),
    ("SOFTMAX", 3, _one(_node("Softmax", ["x"], axis=1), {"x": [2, 8, 3]}, [2, 8, 3])),
    ("MEAN", 2, _one(_node("ReduceMean", ["x"], axes=[2, 3], keepdims=1), {"x": X4}, [1, 4, 1, 1])),
    ("TRANSPOSE", 2, _one(_node("Transpose", ["x"], perm=[0, 2, 1]), {"x": [2, 3, 8]}, [2, 8, 3])),
    (
        "CONCATENATION",
        1,
        _one(_node("Concat", ["x", "z"], axis=1), {"x": X4, "z": X4}, [1, 8, 6, 6]),
    ),
]
CASES += [
    (
        "RESHAPE",
        1,
        _one(
            _node("Reshape", ["x", "s"]),
            {"x": [2, 3, 8]},
            [6, 8],
            {"s": np.array([6, 8], np.int64)},
        ),
    ),
    (
        "RELU6",
        1,
        _one(
            _node("Clip", ["x", "lo", "hi"]),
            {"x": X4},
            X4,
            {"lo": np.float32(0), "hi": np.float32(6)},
        ),
    ),
    (
        "RELU1",
        1,
        _one(
            _node("Clip", ["x", "lo", "hi"]),
            {"x": X4},
            X4,
            {"lo": np.float32(-1), "hi": np.float32(1)},
        ),
    ),
]
# A clip to other bounds is MAXIMUM then MINIMUM (ONNX Max / Min import as stack + max).
_CLIP = _one(
    _node("Clip", ["x", "lo", "hi"]), {"x": X4}, X4, {"lo": np.float32(-0.5), "hi": np.float32(2)}
)
CASES += [("MAXIMUM", 3, _CLIP), ("MINIMUM", 3, _CLIP)]
# Operations Neuron's pattern table (harness.byoc.patterns) does not offload: no Neuron model.
NOT_IN_NEURON_TABLE = {"FLOOR", "ABS", "EXP", "NEG", "SQRT", "POW"}


def _models(path: Path, dialect: str, level: int) -> list[NNModel]:
    mod = to_relax(load(path))
    parted = partition(mod, dialect, {"feature_level": level}, codegen=False)
    return [
        build_model(func, DIALECTS[dialect], level)
        for func in parted.mod.functions.values()
        if func.attrs and "Codegen" in func.attrs
    ]


@pytest.mark.parametrize(
    ("operation", "level", "model"), CASES, ids=[f"{c[0]}-fl{c[1]}" for c in CASES]
)
def test_each_emitted_operation_follows_the_rules(
    operation: str, level: int, model: onnx.ModelProto, tmp_path: Path
) -> None:
    """The translator emits ``operation`` at the lowest level that has its form; every
    operation it emits conforms (Python's check) and the driver of that level builds the
    model (addOperation and finish return NO_ERROR); Neuron too, where it has the operation."""
    path = testmodels.save(model, tmp_path, "m")
    for dialect, lv in (("nnapi", level), ("neuron", 0)):
        if dialect == "neuron" and (
            RULES[operation].neuron_level is None or operation in NOT_IN_NEURON_TABLE
        ):
            continue
        nns = _models(path, dialect, lv)
        emitted = [op.code for nn in nns for op in nn.operations]
        assert operation in emitted, (dialect, emitted)
        driver = Driver(level if dialect == "nnapi" else 8, dialect)
        for nn in nns:
            for op in nn.operations:
                infos = [nn.operand_info(i) for i in op.inputs]
                api_level = lv if dialect == "nnapi" else 99
                assert check(op.code, infos, len(op.outputs), api=dialect, level=api_level) is None
            assert nn_driver.replay(driver, nn) == ("finished", NO_ERROR)


def test_below_its_level_the_operation_stays_on_the_cpu_with_its_reason(tmp_path: Path) -> None:
    """HARD_SWISH (4) at level 3 is its arithmetic; BATCH_MATMUL (6) at level 5 and a dilated
    CONV_2D (3) at level 2 stay on the CPU, the report naming the level."""
    by_op = {(c[0], c[1]): c[2] for c in CASES}
    path = testmodels.save(by_op[("BATCH_MATMUL", 6)], tmp_path, "bmm")
    assert _models(path, "nnapi", 5) == []
    report = partition(to_relax(load(path)), "nnapi", {"feature_level": 5}, codegen=False).report
    assert [c["op"] for c in report["cpu_ops"]] == ["matmul"]
    assert "feature level 6" in report["cpu_ops"][0]["detail"]

    path = testmodels.save(by_op[("CONV_2D", 3)], tmp_path, "dil")
    report = partition(to_relax(load(path)), "nnapi", {"feature_level": 2}, codegen=False).report
    assert report["ops_offloaded"] == 0
    assert "feature level 3" in report["cpu_ops"][0]["detail"]


# ------------------------------------------------------------------------------------------
# The driver rejects what breaks a rule, with the API's own code
# ------------------------------------------------------------------------------------------


def _bmm(m: Model, flags: bool) -> tuple[list[int], int]:
    a = m.operand("TENSOR_FLOAT32", [2, 3, 8])
    b = m.operand("TENSOR_FLOAT32", [2, 8, 5])
    ins = [a, b] + ([m.scalar("BOOL", False), m.scalar("BOOL", False)] if flags else [])
    return ins, m.operand("TENSOR_FLOAT32", [2, 3, 5])


def test_batch_matmul_needs_its_two_flags() -> None:
    m = Model(Driver(7))
    ins, out = _bmm(m, flags=False)
    assert m.operation("BATCH_MATMUL", ins, [out]) == BAD_DATA
    ins, out = _bmm(m, flags=True)
    assert m.operation("BATCH_MATMUL", ins, [out]) == NO_ERROR
    assert m.identify(ins[:2], [out]) == NO_ERROR
    assert m.finish() == NO_ERROR


def test_an_operation_above_the_runtime_level_is_bad_data() -> None:
    d3, d4 = Driver(3), Driver(4)
    assert d3.runtime_feature_level() == 29 and d4.runtime_feature_level() == 30
    for driver, want in ((d3, BAD_DATA), (d4, NO_ERROR)):
        m = Model(driver)
        x = m.operand("TENSOR_FLOAT32", X4)
        y = m.operand("TENSOR_FLOAT32", X4)
        assert m.operation("HARD_SWISH", [x], [y]) == want
    m = Model(Driver(5))
    ins, out = _bmm(m, flags=True)
    assert m.operation("BATCH_MATMUL", ins, [out]) == BAD_DATA


def test_a_form_above_the_runtime_level_is_bad_data() -> None:
    """SOFTMAX's axis and CONV_2D's layout flag and dilation came with level 3."""
    for level, want in ((2, BAD_DATA), (3, NO_ERROR)):
        m = Model(Driver(level))
        x = m.operand("TENSOR_FLOAT32", [2, 8])
        y = m.operand("TENSOR_FLOAT32", [2, 8])
        beta, axis = m.scalar("FLOAT32", 1.0), m.scalar("INT32", -1)
        assert m.operation("SOFTMAX", [x, beta, axis], [y]) == want
        assert m.operation("SOFTMAX", [x, beta], [y]) == NO_ERROR
        # Rank 3 without the axis: only from level 3.
        x3, y3 = m.operand("TENSOR_FLOAT32", [2, 8, 3]), m.operand("TENSOR_FLOAT32", [2, 8, 3])
        assert m.operation("SOFTMAX", [x3, beta], [y3]) == want
        conv = _conv_inputs(m)
        out = m.operand("TENSOR_FLOAT32", [1, 6, 6, 8])
        extra = [m.scalar("BOOL", False), m.scalar("INT32", 1), m.scalar("INT32", 1)]
        assert m.operation("CONV_2D", conv + extra, [out]) == want
        assert m.operation("CONV_2D", conv, [out]) == NO_ERROR
        # Dilation needs both factors: 12 inputs is no form at any level.
        assert m.operation("CONV_2D", conv + extra[:2], [out]) == BAD_DATA


def _conv_inputs(m: Model) -> list[int]:
    x = m.operand("TENSOR_FLOAT32", [1, 6, 6, 4])
    w = m.const([8, 3, 3, 4])
    b = m.const([8])
    window = [m.scalar("INT32", v) for v in (1, 1, 1, 1, 1, 1)]
    return [x, w, b, *window, m.scalar("INT32", 0)]


def test_wrong_types_ranks_and_counts_are_bad_data() -> None:
    m = Model(Driver(7))
    x, z = m.operand("TENSOR_FLOAT32", X4), m.operand("TENSOR_FLOAT32", X4)
    y = m.operand("TENSOR_FLOAT32", X4)
    act = m.scalar("INT32", 0)
    assert m.operation("ADD", [x, z, act], [y]) == NO_ERROR
    # The fused activation as a FLOAT32; the two inputs of different types.
    assert m.operation("ADD", [x, z, m.scalar("FLOAT32", 0.0)], [y]) == BAD_DATA
    zi = m.operand("TENSOR_INT32", X4)
    assert m.operation("ADD", [x, zi, act], [y]) == BAD_DATA
    # Rank 5 ("up to 4"), two outputs, no activation.
    x5, y5 = (
        m.operand("TENSOR_FLOAT32", [1, 2, 3, 4, 5]),
        m.operand("TENSOR_FLOAT32", [1, 2, 3, 4, 5]),
    )
    assert m.operation("ADD", [x5, x5, act], [y5]) == BAD_DATA
    assert m.operation("ADD", [x, z, act], [y, z]) == BAD_DATA
    assert m.operation("ADD", [x, z], [y]) == BAD_DATA
    # A level-3 operation's "rank from 1": a 5-D MAXIMUM is fine.
    assert m.operation("MAXIMUM", [x5, x5], [y5]) == NO_ERROR
    assert m.operation("ADD", None, [y]) == UNEXPECTED_NULL


def test_a_parameter_the_driver_reads_must_be_constant_at_finish() -> None:
    m = Model(Driver(7))
    conv = _conv_inputs(m)
    stride = m.operand("INT32")  # a model input, not a constant
    conv[7] = stride
    out = m.operand("TENSOR_FLOAT32", [1, 6, 6, 8])
    assert m.operation("CONV_2D", conv, [out]) == NO_ERROR  # the API allows it
    assert m.identify([conv[0], stride], [out]) == NO_ERROR
    assert m.finish() == BAD_DATA


def test_neuron_rejects_what_its_adapter_lacks() -> None:
    m = Model(Driver(8, "neuron"))
    x, y = m.operand("TENSOR_FLOAT32", X4), m.operand("TENSOR_FLOAT32", X4)
    assert m.operation("LOG", [x], [y]) == nn_driver.NEURON_BAD_DATA
    assert m.operation("EXP", [x], [y]) == NO_ERROR
    ins, out = _bmm(m, flags=False)
    assert m.operation("BATCH_MATMUL", ins, [out]) == nn_driver.NEURON_BAD_DATA


def test_python_and_the_driver_agree_on_every_operation_and_level() -> None:
    """The same table, two readers: for each operation, its first form at every level, and
    that form with one input too few, Python's verdict is the driver's."""
    drivers = {lv: Driver(lv) for lv in range(1, 9)}
    for name, rule in RULES.items():
        form = rule.forms[0]
        n = len(form.args) - sum(size for size, _ in form.groups)
        for level, driver in drivers.items():
            for count in (n, n - 1):
                m = Model(driver)
                ins, infos = [], []
                for i in range(count):
                    arg = form.arg(i, count)
                    type_name = sorted(arg.types_at(8))[0] if arg.types else "TENSOR_FLOAT32"
                    type_name = (
                        "TENSOR_FLOAT32" if "TENSOR_FLOAT32" in arg.types_at(8) else type_name
                    )
                    rank = 4 if 4 in arg.ranks else min(arg.ranks)
                    if rank == 0:
                        ins.append(m.scalar(type_name, 0))
                    else:
                        dims = [2] * rank
                        ins.append(m.operand(type_name, dims))
                    infos.append(OperandInfo(type_name, rank, rank == 0))
                out = m.operand("TENSOR_FLOAT32", [2, 2, 2, 2])
                python = check(name, infos, 1, api="nnapi", level=level, driver=False) is None
                assert (m.operation(name, ins, [out]) == NO_ERROR) == python, (name, level, count)


def test_an_artifact_for_a_newer_phone_fails_on_an_older_runtime(tmp_path: Path) -> None:
    """The host link takes the driver of the artifact's level, so the host behaves as that
    phone. Generated for level 4 (one HARD_SWISH) and linked with a level-3 driver, as if run
    on an Android 10 phone, building its model fails with BAD_DATA naming the operation; with
    the level-4 driver it runs."""
    import tvm
    import tvm_ffi
    from tvm import relax

    from harness.byoc.link import host_export_options

    by_op = {(c[0], c[1]): c[2] for c in CASES}
    path = testmodels.save(by_op[("HARD_SWISH", 4)], tmp_path, "hs")
    parted = partition(to_relax(load(path)), "nnapi", {"feature_level": 4})
    executable = tvm.compile(parted.mod, target=tvm.target.Target({"kind": "llvm"}))
    x = tvm.runtime.tensor(np.linspace(-4, 4, 144, dtype=np.float32).reshape(X4))
    ffi = [
        f"-I{tvm_ffi.libinfo.find_include_path()}",
        f"-I{tvm_ffi.libinfo.find_dlpack_include_path()}",
    ]
    results = {}
    for level in (3, 4):
        lib = tmp_path / f"fl{level}.so"
        executable.export_library(
            str(lib), options=ffi + host_export_options(None, {"feature_level": level})
        )
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
        try:
            results[level] = vm["main"](x).numpy()
        except Exception as exc:  # TVM raises the generated C's error as a RuntimeError
            results[level] = str(exc)
    assert (
        "ANeuralNetworksModel_addOperation(HARD_SWISH) failed with ANEURALNETWORKS_BAD_DATA"
        in str(results[3])
    )
    v = np.linspace(-4, 4, 144, dtype=np.float32).reshape(X4)
    np.testing.assert_allclose(results[4], v * np.clip(v + 3, 0, 6) / 6, atol=1e-6)


def test_rsqrt_follows_the_rules() -> None:
    """RSQRT (level 3) has no ONNX operator: a Relax module with relax.rsqrt."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(X4, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.rsqrt(x)))
        bb.emit_func_output(out)
    mod = bb.get()
    assert partition(mod, "nnapi", {"feature_level": 2}, codegen=False).report["ops_offloaded"] == 0
    parted = partition(mod, "nnapi", {"feature_level": 3}, codegen=False)
    [func] = [f for f in parted.mod.functions.values() if f.attrs and "Codegen" in f.attrs]
    nn = build_model(func, DIALECTS["nnapi"], 3)
    assert [op.code for op in nn.operations] == ["RSQRT"]
    assert nn_driver.replay(Driver(3), nn) == ("finished", NO_ERROR)
