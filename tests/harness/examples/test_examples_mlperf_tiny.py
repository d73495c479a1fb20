"""The MLPerf Tiny example models: valid ONNX, runnable, deterministic, and TVM-compilable."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from harness.examples import EXAMPLES, example_bytes, macs, write_example
from harness.examples.mlperf_tiny import autoencoder, ds_cnn, mobilenet_v1_025, resnet8

# name -> (input shape, output name, output shape, approximate MACs)
DOCUMENTED: dict[str, tuple[list[int], str, list[int], float]] = {
    "resnet8": ([1, 3, 32, 32], "probs", [1, 10], 12.5e6),
    "ds-cnn": ([1, 1, 49, 10], "probs", [1, 12], 2.7e6),
    "mobilenet-v1-0.25": ([1, 3, 96, 96], "probs", [1, 2], 7.5e6),
    "autoencoder": ([1, 640], "reconstruction", [1, 640], 0.26e6),
}


def _run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"input": x})
    return np.asarray(y)


def _input(shape: list[int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_registry_names() -> None:
    assert list(EXAMPLES) == ["resnet8", "ds-cnn", "mobilenet-v1-0.25", "autoencoder"]
    assert EXAMPLES["resnet8"] is resnet8
    assert EXAMPLES["ds-cnn"] is ds_cnn
    assert EXAMPLES["mobilenet-v1-0.25"] is mobilenet_v1_025
    assert EXAMPLES["autoencoder"] is autoencoder


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_valid_onnx_with_documented_interface(name: str) -> None:
    model = EXAMPLES[name](0)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    in_shape, out_name, out_shape, approx_macs = DOCUMENTED[name]
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == in_shape
    assert out.name == out_name
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == out_shape
    for init in model.graph.initializer:
        assert init.data_type == onnx.TensorProto.FLOAT, init.name
    assert macs(model) == pytest.approx(approx_macs, rel=0.05)


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_runs_in_onnxruntime_with_sane_outputs(name: str) -> None:
    in_shape, _, out_shape, _ = DOCUMENTED[name]
    model = EXAMPLES[name](0)
    y1 = _run_ort(model, _input(in_shape, 1))
    y2 = _run_ort(model, _input(in_shape, 2))
    assert list(y1.shape) == out_shape
    assert y1.dtype == np.float32
    assert np.isfinite(y1).all()
    assert np.ptp(y1) > 0  # not all identical
    assert not np.allclose(y1, y2)  # depends on the input
    if out_shape[-1] != 640:
        assert y1.sum() == pytest.approx(1.0, abs=1e-5)  # softmax
    else:
        assert 0.05 < float(np.std(y1)) < 20.0  # activations of order one


def test_mobilenet_resolution() -> None:
    model = mobilenet_v1_025(resolution=128)
    onnx.checker.check_model(model, full_check=True)
    y = _run_ort(model, _input([1, 3, 128, 128]))
    assert y.shape == (1, 2)
    with pytest.raises(ValueError, match="resolution"):
        mobilenet_v1_025(resolution=8)


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_deterministic_per_seed_and_different_across_seeds(name: str) -> None:
    assert example_bytes(name, 0) == example_bytes(name, 0)
    assert example_bytes(name, 0) != example_bytes(name, 1)
    in_shape = DOCUMENTED[name][0]
    x = _input(in_shape)
    y0 = _run_ort(EXAMPLES[name](0), x)
    y1 = _run_ort(EXAMPLES[name](1), x)
    assert not np.allclose(y0, y1)


def test_write_example(tmp_path: Path) -> None:
    path = write_example("ds-cnn", tmp_path / "models")
    assert path == tmp_path / "models" / "ds-cnn.onnx"
    first = path.read_bytes()
    assert first == example_bytes("ds-cnn", 0)
    write_example("ds-cnn", tmp_path / "models")
    assert path.read_bytes() == first
    assert write_example("ds-cnn", tmp_path, seed=3).read_bytes() != first
    onnx.checker.check_model(str(path), full_check=True)
    with pytest.raises(ValueError, match="unknown example 'resnet50'"):
        write_example("resnet50", tmp_path)


def test_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.examples", "resnet8", "autoencoder", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["autoencoder.onnx", "resnet8.onnx"]
    assert done.stdout.split() == [
        str(tmp_path / "resnet8.onnx"),
        str(tmp_path / "autoencoder.onnx"),
    ]
    assert (tmp_path / "resnet8.onnx").read_bytes() == example_bytes("resnet8", 0)
    bad = subprocess.run(
        [sys.executable, "-m", "harness.examples", "nope", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


def test_tvm_matches_onnxruntime_for_all_examples() -> None:
    tvm = pytest.importorskip("tvm")
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    target = tvm.target.Target({"kind": "llvm"})
    make: Callable[[int], onnx.ModelProto]
    for name, make in EXAMPLES.items():
        in_shape = DOCUMENTED[name][0]
        model = make(0)
        x = _input(in_shape)
        mod = from_onnx(model, shape_dict={"input": in_shape}, keep_params_in_input=False)
        executable = tvm.compile(mod, target=target)
        vm = relax.VirtualMachine(executable, tvm.cpu())
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(y, _run_ort(model, x), rtol=0, atol=1e-4, err_msg=name)
