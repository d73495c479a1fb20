"""What the corpus of trained models found in the partitioner, each on a small model of its
own: operators the APIs lack written in operators they have (``normalize.spell_for_tables``:
squeeze / expand_dims, leaky ReLU, ONNX Max, conv1d, 4-D and N-D-by-matrix matmuls), exactly,
and 0-d tensors, which the APIs cannot have (openWakeWord's mel spectrogram normalises by its
``ReduceMax - 80``: the offloaded SUB of two scalars made ModelFinish fail with BAD_DATA at
run time, on both dialects)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.bench import BenchPlan, Protocol, run_bench
from harness.byoc import partition
from harness.byoc.normalize import normalize
from harness.byoc.report import op_calls
from harness.byoc.translate import op_name
from harness.modelio import load, to_relax

import testmodels

ONCE = Protocol(warmup=0, min_iterations=1, min_seconds=0.0, max_seconds=5)


def _f32(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def corpus_operators(seed: int = 0) -> onnx.ModelProto:
    """A 1-D conv (NCW), leaky ReLU, Max with a constant, Unsqueeze, a MatMul of a 4-D tensor
    by a weight matrix, Squeeze, attention's 4-D ``q @ k^T`` with its softmax, and a Max with
    the 0-d ``ReduceMax(y) - 1`` (the mel spectrogram's normalisation)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(6, 4, 3), "conv_w"),
        numpy_helper.from_array(w(6, 1), "floor"),
        numpy_helper.from_array(w(8, 5), "dense_w"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], strides=[2], pads=[1, 1]),
        helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.1),
        helper.make_node("Max", ["l", "floor"], ["m"]),
        helper.make_node("Unsqueeze", ["m", "axis1"], ["u"]),
        helper.make_node("MatMul", ["u", "dense_w"], ["d"]),
        helper.make_node("Squeeze", ["d", "axis1"], ["s"]),
        helper.make_node("ReduceMax", ["s"], ["top"], keepdims=0),
        helper.make_node("Sub", ["top", "one"], ["low"]),
        helper.make_node("Max", ["s", "low"], ["y"]),
        helper.make_node("Transpose", ["q"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
    ]
    return testmodels.make_model(
        nodes,
        [_f32("x", [1, 4, 16]), _f32("q", [1, 2, 3, 8])],
        [_f32("y", [1, 6, 5]), _f32("attn", [1, 2, 3, 3])],
        inits,
        "corpus_operators",
    )


def _ops(mod: Any) -> Counter[str]:
    return Counter(op_name(call) for _, call in op_calls(mod["main"]))


def _run_cpu(mod: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import tvm
    from tvm import relax

    exe = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in inputs])
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def test_the_operators_the_apis_lack_are_written_in_theirs_exactly(tmp_path: Path) -> None:
    mod = to_relax(load(testmodels.save(corpus_operators(), tmp_path, "ops")))
    imported = _ops(mod)
    for op in ("relax.nn.conv1d", "relax.nn.leakyrelu", "relax.squeeze", "relax.stack"):
        assert imported[op] >= 1, imported
    normalized = normalize(mod)
    ops = _ops(normalized)
    for op in (
        "relax.nn.conv1d",
        "relax.nn.leakyrelu",
        "relax.squeeze",
        "relax.expand_dims",
        "relax.stack",
        "relax.broadcast_to",
    ):
        assert op not in ops, (op, ops)
    assert ops["relax.nn.conv2d"] == 1 and ops["relax.maximum"] == 3  # leaky, Max, Max
    for _, call in op_calls(normalized["main"]):
        if op_name(call) == "relax.matmul":
            assert len(call.ty.shape) in (2, 3)  # the 4-D ones as 3-D, by a matrix as 2-D

    rng = np.random.default_rng(1)
    inputs = [
        rng.standard_normal((1, 4, 16)).astype(np.float32),
        rng.standard_normal((1, 2, 3, 8)).astype(np.float32),
    ]
    for before, after in zip(_run_cpu(mod, inputs), _run_cpu(normalized, inputs), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_0d_tensors_stay_on_the_cpu_and_the_rest_matches_onnxruntime(tmp_path: Path) -> None:
    path = testmodels.save(corpus_operators(), tmp_path, "ops")
    for dialect, level in (("nnapi", 7), ("neuron", 7)):
        report = partition(
            to_relax(load(path)), dialect, {"feature_level": level}, codegen=False
        ).report
        zero_d = [e for e in report["cpu_ops"] if "0-d tensor" in (e.get("detail") or "")]
        # ReduceMax - 1 (a 0-d result) and the Max reading it (a 0-d operand)
        assert [e["op"] for e in zero_d] == ["subtract", "maximum"], report["cpu_ops"]
        assert all(e["reason"] == "shape constraint" for e in zero_d)
        kept = Counter(e["op"] for e in report["cpu_ops"])
        assert set(kept) == {"subtract", "maximum", "max"}, kept  # max: the ReduceMax

    # (the same translations serve Neuron: test_corpus.py runs the mel spectrogram on both)
    plan = BenchPlan(path, backends=["tvm-nnapi"], devices=["local"], protocol=ONCE)
    for doc in run_bench(plan):
        assert doc.status == "ok", (doc.backend, doc.error)
        assert doc.accuracy is not None and doc.accuracy.passed, doc.accuracy
        assert doc.accuracy.max_abs_err < 1e-5


def qkv_split(seed: int = 0) -> onnx.ModelProto:
    """SVTR's attention input (PP-OCRv4 rec): the qkv projection [1, N, 3*heads*d] reshaped to
    [1, N, 3, heads, d], transposed to [3, 1, heads, N, d], sliced into q, k and v and squeezed
    back to 4-D; then ``q @ k^T`` and the product with v. N=6, heads=2, d=4."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 24)) * 0.3).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, 6, 3, 2, 4], np.int64), "split_shape"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"])]
    nodes.append(helper.make_node("Reshape", ["qkv", "split_shape"], ["qkv5"]))
    nodes.append(helper.make_node("Transpose", ["qkv5"], ["heads"], perm=[2, 0, 3, 1, 4]))
    for i, name in enumerate("qkv"):
        bounds = [f"{name}_from", f"{name}_to"]
        inits += [
            numpy_helper.from_array(np.array([b], np.int64), n)
            for b, n in zip((i, i + 1), bounds, strict=True)
        ]
        nodes.append(helper.make_node("Slice", ["heads", *bounds, "axis0"], [f"{name}5"]))
        nodes.append(helper.make_node("Squeeze", [f"{name}5", "axis0"], [name]))
    nodes += [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("MatMul", ["scores", "v"], ["y"]),
    ]
    return testmodels.make_model(
        nodes, [_f32("x", [1, 6, 8])], [_f32("y", [1, 2, 6, 4])], inits, "qkv_split"
    )


def test_the_qkv_split_is_lowered_to_rank_4_exactly(tmp_path: Path) -> None:
    # Both APIs take tensors of rank 4 at most: the 5-D reshape, transpose and slices kept
    # the split on the CPU (and each reshape around it). Their unit axis dropped, only the
    # slices (no SLICE in the driver) stay.
    path = testmodels.save(qkv_split(), tmp_path, "qkv")
    mod = to_relax(load(path))
    normalized = normalize(mod)
    for _, call in op_calls(normalized["main"]):
        assert len(call.ty.shape) <= 4, (op_name(call), call.ty)
    x = np.random.default_rng(2).standard_normal((1, 6, 8)).astype(np.float32)
    for before, after in zip(_run_cpu(mod, [x]), _run_cpu(normalized, [x]), strict=True):
        np.testing.assert_array_equal(after, before)  # moves only: bit for bit
    for dialect in ("nnapi", "neuron"):
        report = partition(mod, dialect, {"feature_level": 7}, codegen=False).report
        assert Counter(e["op"] for e in report["cpu_ops"]) == {"strided_slice": 3}, report
