"""A trained network stored with float16 weights, through tvm-nnapi and tvm-neuron on the host
reference driver. No wheel in the registry ships one (registry_models.py lists what was
searched), so it is made here the way exporters store weights in half precision: the OCR
classifier's float32 initializers written as float16, each read through a Cast to float32
(the model computes in float32, as on a phone that loads half-size weights; this one keeps
its weights in Constant nodes). The Casts of
constants are folded before partitioning, so the network still offloads whole; the reference
is onnxruntime on the same half-weight model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import MISSING

from harness.bench import BenchPlan, Protocol, run_bench
from harness.modelio import parse_input_spec

import registry_models

ONCE = Protocol(warmup=0, min_iterations=1, min_seconds=0.0, max_seconds=5)


def half_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every float32 weight (initializer or Constant node) stored as float16
    and cast back to float32 where it is read."""
    half = onnx.ModelProto()
    half.CopyFrom(model)
    graph = half.graph
    nodes: list[onnx.NodeProto] = []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(values, f"{init.name}.f16"))
            nodes.append(_cast(init.name))
    for node in graph.node:
        nodes.append(node)
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type != "Constant" or value is None or value.t.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(value.t).astype(np.float16)
        value.t.CopyFrom(numpy_helper.from_array(values))
        name = node.output[0]
        node.output[0] = f"{name}.f16"
        nodes.append(_cast(name))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(half)
    return half


def _cast(name: str) -> onnx.NodeProto:
    return helper.make_node("Cast", [f"{name}.f16"], [name], to=TensorProto.FLOAT)


def _weight_types(model: onnx.ModelProto) -> set[int]:
    types = {init.data_type for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            types |= {a.t.data_type for a in node.attribute if a.name == "value"}
    return types


def test_float16_weights_fold_offload_whole_and_match_onnxruntime(tmp_path: Path) -> None:
    model = registry_models.PPOCR_CLS
    source = onnx.load(registry_models.fetch(model))
    half = half_weights(source)
    assert TensorProto.FLOAT in _weight_types(source)
    assert TensorProto.FLOAT16 in _weight_types(half)
    assert TensorProto.FLOAT not in _weight_types(half)
    path = tmp_path / "ppocr_cls_f16_weights.onnx"
    onnx.save(half, path)
    assert path.stat().st_size < 0.6 * len(source.SerializeToString())  # half-size weights

    plan = BenchPlan(
        path,
        backends=["tvm-cpu", "tvm-nnapi", "tvm-neuron"],
        devices=["local"],
        protocol=ONCE,
        inputs=[parse_input_spec(s) for s in model.inputs],
    )
    docs = run_bench(plan)
    for doc in docs:
        accuracy = doc.accuracy
        assert doc.status == "ok", (doc.backend, doc.error, accuracy)
        assert accuracy is not None and accuracy.passed, (doc.backend, accuracy)
        assert accuracy.max_abs_err < 1e-4 and accuracy.cosine > 0.999999
    for doc in docs[1:]:
        report = doc.partition
        assert report is not MISSING
        # The Casts of the weights are folded into float32 constants: nothing of them is left
        # to run, on either side, and the network is one subgraph as with float32 weights.
        assert "astype" not in report["by_op_type"], report["by_op_type"].get("astype")
        assert report["subgraphs"] == 1 and report["macs_offloaded_share"] == 1.0
        assert report["boundary_bytes"] == (3 * 48 * 192 + 2) * 4
