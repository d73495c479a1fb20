"""End-to-end measurements on the local device: real TVM builds, the native runner, onnxruntime."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from harness.bench import RESULT_KEYS, BenchPlan, Protocol, run_bench
from harness.config import get_settings
from harness.modelio import parse_input_spec

import testmodels
from tflite_builder import cnn_tflite

FAST = Protocol(warmup=2, min_iterations=10, min_seconds=0.05, max_seconds=5.0)


def _bench(path: Path, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("protocol", FAST)
    return [doc.dump() for doc in run_bench(BenchPlan(model_path=path, **kwargs))]


def _check_ok(doc: dict[str, Any], min_iterations: int = FAST.min_iterations) -> None:
    assert doc["status"] == "ok", doc["error"]
    assert set(doc) >= set(RESULT_KEYS)
    lat = doc["latency_ms"]
    assert set(lat) == {"min", "median", "mean", "std", "p90", "p99", "cv", "ci95", "n"}
    assert lat["n"] == len(doc["samples_ms"]) >= min_iterations
    assert (
        0
        < lat["min"]
        <= lat["ci95"][0]
        <= lat["median"]
        <= lat["ci95"][1]
        <= max(doc["samples_ms"])
    )
    assert np.isclose(lat["median"], np.median(doc["samples_ms"]))
    assert doc["load_ms"] > 0 and doc["first_ms"] > 0 and doc["peak_rss_kb"] > 1000
    acc = doc["accuracy"]
    assert acc["passed"] is True and acc["max_abs_err"] < 1e-3 and acc["cosine"] > 0.9999
    prov = doc["provenance"]
    assert prov["tvm_version"].startswith("0.27") and prov["edgefarm_version"]
    assert prov["target"] == "host"


def test_mobilenet_like_tvm_and_ort_side_by_side(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet")
    tvm_doc, ort_doc = _bench(path, backends=["tvm-cpu", "ort"])
    for doc in (tvm_doc, ort_doc):
        _check_ok(doc)
        assert doc["accuracy"]["reference"] == "onnxruntime"
        assert doc["accuracy"]["top1_agree"] == 1.0  # [1, 10] class scores
        assert doc["device"]["id"] == "local" and doc["device"]["kind"] == "local"
        assert doc["model"]["name"] == "mnet" and doc["model"]["format"] == "onnx"
    assert tvm_doc["backend"] == "tvm-cpu" and ort_doc["backend"] == "ort"
    assert len(tvm_doc["provenance"]["artifact_key"]) == 32
    assert tvm_doc["provenance"]["compile_options"] == {"opt_level": 3}
    assert ort_doc["provenance"]["onnxruntime_version"]
    # The native runner's peak RSS is its own, not the Python parent's it was forked from.
    assert tvm_doc["peak_rss_kb"] < ort_doc["peak_rss_kb"]


def test_second_run_hits_the_cache(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    (first,) = _bench(path)
    (second,) = _bench(path)
    _check_ok(first)
    _check_ok(second)
    assert second["provenance"]["cache_hit"] is True
    assert second["provenance"]["artifact_key"] == first["provenance"]["artifact_key"]


def test_dynamic_batch_with_spec(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.dynamic_batch(), tmp_path, "dyn")
    docs = _bench(path, inputs=[parse_input_spec("images:3x3x8x8")], backends=["tvm-cpu", "ort"])
    for doc in docs:
        _check_ok(doc)
        assert doc["model"]["inputs"][0]["shape"] == [3, 3, 8, 8]


def test_dynamic_batch_without_spec_fails_every_measurement(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.dynamic_batch(), tmp_path, "dyn")
    docs = _bench(path, backends=["tvm-cpu", "ort"])
    assert [d["status"] for d in docs] == ["failed", "failed"]
    for doc in docs:
        assert doc["error"]["stage"] == "prepare"
        assert "images" in doc["error"]["message"]


def test_unsupported_op_fails_tvm_but_ort_still_runs(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.unsupported_op(), tmp_path, "det")
    tvm_doc, ort_doc = _bench(path, backends=["tvm-cpu", "ort"])
    assert tvm_doc["status"] == "failed"
    assert tvm_doc["error"]["stage"] == "import" and "Det" in tvm_doc["error"]["message"]
    _check_ok(ort_doc)


def test_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("not a model at all\n")
    docs = _bench(path, backends=["tvm-cpu", "ort"])
    assert {(d["status"], d["error"]["stage"]) for d in docs} == {("failed", "import")}
    assert docs[0]["model"]["name"] == "notes"


def test_unknown_backend_and_device_do_not_stop_the_others(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    docs = _bench(path, backends=["tvm-cpu", "tvm-fpga"], devices=["local", "serial:1"])
    by = {(d["device"]["id"], d["backend"]): d for d in docs}
    _check_ok(by[("local", "tvm-cpu")])
    assert by[("local", "tvm-fpga")]["error"]["stage"] == "compile"
    assert "unknown device" in by[("serial:1", "tvm-cpu")]["error"]["message"]
    assert len(docs) == 4


def test_user_inputs_from_npz(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64))
    (doc,) = _bench(path, inputs_npz=npz)
    _check_ok(doc)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 64), np.float32))
    (doc,) = _bench(path, inputs_npz=bad)
    assert doc["status"] == "failed" and doc["error"]["stage"] == "prepare"
    assert "'x'" in doc["error"]["message"]


def test_runner_hang_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edgefarm_home: Path
) -> None:
    """A runner that stops responding is killed at the timeout and the run reported failed."""
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    _bench(path)  # compile and deploy first, so only the run itself can time out
    monkeypatch.setenv("EDGEFARM_RUN_TIMEOUT_S", "2")
    get_settings.cache_clear()
    stopped: list[int] = []

    def freeze_the_runner() -> None:
        # A real hang: the real runner process is frozen with SIGSTOP once it has started.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not stopped:
            # Only this test's runner: a process this one started (the local device runs it
            # as a child), found by what it runs, not by where (a path pattern once missed it).
            for child in psutil.Process().children(recursive=True):
                try:
                    argv = child.cmdline()
                except psutil.Error:  # ended meanwhile
                    continue
                if argv and argv[0].endswith("/edgefarm-runner") and "--module" in argv:
                    os.kill(child.pid, signal.SIGSTOP)
                    stopped.append(child.pid)
            time.sleep(0.02)

    thread = threading.Thread(target=freeze_the_runner)
    thread.start()
    slow = Protocol(warmup=1, min_iterations=10, min_seconds=3.0, max_seconds=3.0)
    started = time.monotonic()
    (doc,) = [d.dump() for d in run_bench(BenchPlan(model_path=path, protocol=slow))]
    thread.join()
    assert stopped, f"the runner was never seen; the run: {doc['status']} {doc.get('error')}"
    assert doc["status"] == "failed" and doc["error"]["stage"] == "run"
    assert "did not finish within 5 s" in doc["error"]["message"]
    assert time.monotonic() - started < 30
    for pid in stopped:  # killed, not left behind
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )


def test_broken_artifact_on_the_device_fails_at_run(tmp_path: Path, edgefarm_home: Path) -> None:
    path = testmodels.save(testmodels.mlp(seed=7), tmp_path, "mlp7")
    (ok,) = _bench(path)
    _check_ok(ok)
    key = ok["provenance"]["artifact_key"]
    on_device = edgefarm_home / "local-device" / "artifacts" / key / "lib.so"
    on_device.write_bytes(b"\x7fELF garbage")
    (doc,) = _bench(path)
    assert doc["status"] == "failed" and doc["error"]["stage"] == "run"
    assert "load" in doc["error"]["message"]


def test_tflite_model_against_litert(tmp_path: Path) -> None:
    path = tmp_path / "cnn.tflite"
    path.write_bytes(cnn_tflite())
    tvm_doc, ort_doc = _bench(path, backends=["tvm-cpu", "ort"])
    _check_ok(tvm_doc)
    assert tvm_doc["accuracy"]["reference"] == "litert"
    assert ort_doc["status"] == "failed" and "runs onnx models" in ort_doc["error"]["message"]


@pytest.mark.torch
def test_pt2_model_against_pytorch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x: Any) -> Any:
            y = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return torch.softmax(self.fc(y), dim=-1)

    torch.manual_seed(0)
    program = torch.export.export(Net().eval(), (torch.randn(1, 3, 16, 16),))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    (doc,) = _bench(path)
    _check_ok(doc)
    assert doc["model"]["format"] == "pt2" and doc["accuracy"]["reference"] == "pytorch"


def test_peak_rss_is_the_runners_own_not_its_parents(tmp_path: Path) -> None:
    """Linux carries ru_maxrss across exec; a big parent must not inflate the runner's peak."""
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    ballast = bytearray(400 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: RSS grows ~400 MB
    tvm_doc, ort_doc = _bench(path, backends=["tvm-cpu", "ort"])
    del ballast
    _check_ok(tvm_doc)
    _check_ok(ort_doc)
    assert tvm_doc["peak_rss_kb"] < 100 * 1024
    assert ort_doc["peak_rss_kb"] < 350 * 1024
