"""The ``edgefarm`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import bench

import testmodels

FAST = ["--warmup", "1", "--min-iterations", "5", "--min-seconds", "0.05"]
DOC_KEYS = set(bench.RESULT_KEYS)


def edgefarm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_bench_writes_table_and_json(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet")
    out = tmp_path / "r.json"
    proc = edgefarm("bench", str(model), "-b", "tvm-cpu", "-b", "ort", "--json", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "edgefarm results" in proc.stdout and "tvm-cpu" in proc.stdout and "ort" in proc.stdout
    docs = json.loads(out.read_text())
    assert [d["backend"] for d in docs] == ["tvm-cpu", "ort"]
    for doc in docs:
        assert set(doc) >= DOC_KEYS
        assert set(doc["accuracy"]) >= {
            "reference",
            "max_abs_err",
            "max_rel_err",
            "cosine",
            "top1_agree",
            "passed",
        }
        assert set(doc["provenance"]) >= {
            "tvm_version",
            "edgefarm_version",
            "target",
            "compile_options",
        }
    assert "artifact_key" in docs[0]["provenance"]


def test_exit_status_is_1_when_one_measurement_fails(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.unsupported_op(), tmp_path, "det")
    out = tmp_path / "r.json"
    proc = edgefarm("bench", str(model), "-b", "tvm-cpu", "-b", "ort", "--json", str(out), *FAST)
    assert proc.returncode == 1
    assert "failed det / local / tvm-cpu at import" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr + proc.stdout
    statuses = [d["status"] for d in json.loads(out.read_text())]
    assert statuses == ["failed", "ok"]


def test_bad_model_has_no_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(3000))
    proc = edgefarm("bench", str(junk), *FAST)
    assert proc.returncode == 1
    assert "at import" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_input_spec_is_a_usage_error(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    proc = edgefarm("bench", str(model), "--input", "x=1x64")
    assert proc.returncode == 2
    assert "cannot read input spec 'x=1x64'" in proc.stderr


def test_bad_option(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    proc = edgefarm("bench", str(model), "-o", "threads=2")
    assert proc.returncode == 2 and "BACKEND.KEY=VALUE" in proc.stderr


def test_examples_command(tmp_path: Path) -> None:
    proc = edgefarm("examples", "resnet8", "ds-cnn", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds-cnn.onnx", "resnet8.onnx"]
    assert edgefarm("examples", "alexnet", "-o", str(tmp_path)).returncode == 2


def test_partition_cost_prints_prediction_and_stores_costs(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    out = tmp_path / "r.json"
    args = ["bench", str(model), "-b", "tvm-neuron", "--partition", "cost", "--json", str(out)]
    proc = edgefarm(*args, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "partition" in proc.stdout and "predicted ms" in proc.stdout
    [doc] = json.loads(out.read_text())
    report = doc["partition"]
    assert report["mode"] == "cost" and report["measured_ms"] == doc["latency_ms"]["median"]
    klass = report["cost"]["device_class"]
    assert klass.startswith("local:")

    listed = edgefarm("costs", "list", "--device-class", klass)
    assert listed.returncode == 0, listed.stderr
    assert "cpu/o3" in listed.stdout and "neuron/fast_single_answer" in listed.stdout
    assert "matmul" in listed.stdout and "probe relu" in listed.stdout
    forgot = edgefarm("costs", "forget", "--device-class", klass)
    assert forgot.returncode == 0 and "forgot" in forgot.stderr
    assert int(forgot.stderr.split()[1]) >= 2 + 3 + 3 + 1
    assert "(0)" in edgefarm("costs", "list", "--device-class", klass).stdout


def test_partition_mode_errors_are_usage_errors(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    bad = edgefarm("bench", str(model), "-b", "tvm-nnapi", "--partition", "greedy")
    assert bad.returncode == 2 and "one of all, cost" in bad.stderr
    cpu = edgefarm("bench", str(model), "-b", "tvm-cpu", "--partition", "cost")
    assert cpu.returncode == 2 and "offloading backends" in cpu.stderr
    assert "Traceback" not in bad.stderr + cpu.stderr
