"""The native runner, built for real against the TVM wheel and run on real TVM artifacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.config import get_settings
from harness.errors import HarnessBug, InfrastructureError
from harness.runner import (
    RunnerError,
    RunnerOk,
    build_host_runner,
    compile_runner,
    parse_runner_output,
    runtime_libraries,
)

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.relax.frontend.onnx import from_onnx  # noqa: E402
from tvm.script import relax as R  # noqa: E402

FAST = ["--warmup", "2", "--min-iterations", "5", "--min-seconds", "0.02"]


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def _init(rng: np.random.Generator, name: str, shape: Sequence[int]) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)


def mlp_model() -> onnx.ModelProto:
    """Two outputs: the logits and the hidden activation."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["h2"]),
        helper.make_node("Add", ["h2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, 32]),
        ],
        initializer=[
            _init(rng, "w1", (16, 32)),
            _init(rng, "b1", (32,)),
            _init(rng, "w2", (32, 10)),
            _init(rng, "b2", (10,)),
        ],
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def cnn_model() -> onnx.ModelProto:
    """Conv, depthwise conv, pointwise conv, global pooling and a dense layer."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "c1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["a1"]),
        helper.make_node("Conv", ["a1", "dw"], ["b"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["b"], ["b1"]),
        helper.make_node("Conv", ["b1", "pw"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        initializer=[
            _init(rng, "c1", (8, 3, 3, 3)),
            _init(rng, "dw", (8, 1, 3, 3)),
            _init(rng, "pw", (16, 8, 1, 1)),
            _init(rng, "fc", (5, 16)),
            _init(rng, "fb", (5,)),
        ],
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


@tvm.script.ir_module
class NestedOutputs:
    @R.function
    def main(
        a: R.Tensor((2, 3), "int8"),
        b: R.Tensor((4,), "uint8"),
        c: R.Tensor((2, 2), "float16"),
        d: R.Tensor((3,), "bool"),
        e: R.Tensor((2,), "int64"),
        f: R.Tensor((1, 2), "int32"),
    ):
        with R.dataflow():
            a2 = R.add(a, a)
            b2 = R.add(b, b)
            c2 = R.multiply(c, c)
            d2 = R.logical_not(d)
            e2 = R.add(e, e)
            f2 = R.add(f, f)
            out = ((a2, b2), (c2, (d2, e2)), f2)
            R.output(out)
        return out


def _export(mod: Any, path: Path) -> Path:
    executable = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    executable.export_library(str(path))
    return path


def _export_onnx(model: onnx.ModelProto, shapes: dict[str, list[int]], path: Path) -> Path:
    mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    return _export(mod, path)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runner")


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    # The session's throwaway farm home (tests/conftest.py): other tests reuse this build.
    return get_settings().cache_path


@pytest.fixture(scope="module")
def runner(cache_dir: Path) -> Path:
    return build_host_runner(cache_dir)


@pytest.fixture(scope="module")
def mlp(work: Path) -> tuple[onnx.ModelProto, Path]:
    model = mlp_model()
    return model, _export_onnx(model, {"x": [1, 16]}, work / "mlp.so")


@pytest.fixture(scope="module")
def cnn(work: Path) -> tuple[onnx.ModelProto, Path]:
    model = cnn_model()
    return model, _export_onnx(model, {"x": [1, 3, 16, 16]}, work / "cnn.so")


@pytest.fixture(scope="module")
def nested(work: Path) -> Path:
    return _export(NestedOutputs, work / "nested.so")


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def run(
    binary: Path, *args: str | Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], RunnerOk | RunnerError]:
    proc = subprocess.run(
        [str(binary), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    # Exactly one JSON object on stdout.
    assert len(proc.stdout.strip().splitlines()) == 1, proc.stdout
    json.loads(proc.stdout)
    report = parse_runner_output(proc.stdout, stderr=proc.stderr, returncode=proc.returncode)
    return proc, report


def save_inputs(directory: Path, *arrays: np.ndarray) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, array in enumerate(arrays):
        path = directory / f"in{i}.npy"
        np.save(path, array)
        paths.append(path)
    return paths


def input_args(paths: Sequence[Path]) -> list[str]:
    return [arg for p in paths for arg in ("--input", str(p))]


def onnx_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feeds)]


def expect_error(binary: Path, stage: str, *args: str | Path, exit_code: int = 2) -> RunnerError:
    proc, report = run(binary, *args)
    assert proc.returncode == exit_code, proc.stdout
    assert isinstance(report, RunnerError), report
    assert report.stage == stage, report
    assert "\n" not in report.message
    return report


# ----------------------------------------------------------------------------------------------
# Measurements that work
# ----------------------------------------------------------------------------------------------


def test_mlp_two_outputs_match_onnxruntime(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, module = mlp
    x = np.random.default_rng(3).standard_normal((1, 16)).astype(np.float32)
    inputs = save_inputs(tmp_path / "in", x)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc, report = run(
        runner,
        "--module",
        module,
        *input_args(inputs),
        "--output-dir",
        out_dir,
        "--warmup",
        "3",
        "--min-iterations",
        "25",
        "--min-seconds",
        "0.05",
    )
    assert proc.returncode == 0, proc.stdout
    assert isinstance(report, RunnerOk)
    assert report.runner_version == "1"
    assert report.warmup == 3
    # A call takes microseconds: --min-seconds, not --min-iterations, ended the loop.
    assert len(report.samples_ms) > 25
    assert all(s > 0 for s in report.samples_ms)
    assert report.load_ms > 0
    assert report.first_ms > 0
    assert report.peak_rss_kb > 1000
    assert report.profile is None
    assert [i.model_dump() for i in report.inputs] == [
        {"file": "in0.npy", "dtype": "float32", "shape": [1, 16]}
    ]
    assert [o.model_dump() for o in report.outputs] == [
        {"file": "out0.npy", "dtype": "float32", "shape": [1, 10]},
        {"file": "out1.npy", "dtype": "float32", "shape": [1, 32]},
    ]
    expected = onnx_reference(model, {"x": x})
    for i, want in enumerate(expected):
        got = np.load(out_dir / f"out{i}.npy")
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_cnn_matches_onnxruntime(
    runner: Path, cnn: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, module = cnn
    x = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)
    inputs = save_inputs(tmp_path / "in", x)
    proc, report = run(
        runner, "--module", module, *input_args(inputs), "--output-dir", tmp_path, *FAST
    )
    assert isinstance(report, RunnerOk), proc.stdout
    assert report.outputs[0].shape == [1, 5]
    (want,) = onnx_reference(model, {"x": x})
    np.testing.assert_allclose(np.load(tmp_path / "out0.npy"), want, rtol=1e-4, atol=1e-5)


def test_dtypes_and_nested_tuples_flatten_depth_first(
    runner: Path, nested: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(-60, 60, (2, 3)).astype(np.int8)
    b = rng.integers(0, 100, (4,)).astype(np.uint8)
    c = rng.standard_normal((2, 2)).astype(np.float16)
    d = np.array([True, False, True])
    e = np.array([2**40, -3], dtype=np.int64)
    f = np.array([[7, -9]], dtype=np.int32)
    inputs = save_inputs(tmp_path / "in", a, b, c, d, e, f)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc, report = run(
        runner, "--module", nested, *input_args(inputs), "--output-dir", out_dir, *FAST
    )
    assert isinstance(report, RunnerOk), proc.stdout
    assert [i.dtype for i in report.inputs] == [
        "int8",
        "uint8",
        "float16",
        "bool",
        "int64",
        "int32",
    ]
    expected = [a + a, b + b, c * c, ~d, e + e, f + f]
    assert [o.file for o in report.outputs] == [f"out{i}.npy" for i in range(6)]
    assert [o.dtype for o in report.outputs] == [str(x.dtype) for x in expected]
    for i, want in enumerate(expected):
        got = np.load(out_dir / f"out{i}.npy")
        assert got.dtype == want.dtype
        assert list(got.shape) == report.outputs[i].shape
        np.testing.assert_array_equal(got, want)


def test_without_output_dir_outputs_are_described_not_written(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.zeros((1, 16), np.float32))
    _, report = run(runner, "--module", mlp[1], *input_args(inputs), *FAST)
    assert isinstance(report, RunnerOk)
    assert [(o.file, o.shape) for o in report.outputs] == [(None, [1, 10]), (None, [1, 32])]
    assert not list(tmp_path.glob("out*.npy"))


def test_warmup_zero_makes_the_first_call_the_first_sample(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.ones((1, 16), np.float32))
    _, report = run(
        runner,
        "--module",
        mlp[1],
        *input_args(inputs),
        "--warmup",
        "0",
        "--min-iterations",
        "3",
        "--min-seconds",
        "0",
    )
    assert isinstance(report, RunnerOk)
    assert report.warmup == 0
    assert len(report.samples_ms) == 3
    assert report.samples_ms[0] == report.first_ms


def test_iteration_and_time_limits(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.ones((1, 16), np.float32))
    base = ["--module", str(mlp[1]), *input_args(inputs), "--warmup", "1"]
    # --max-iterations stops before --min-seconds is reached.
    _, capped = run(
        runner, *base, "--min-iterations", "7", "--min-seconds", "30", "--max-iterations", "7"
    )
    assert isinstance(capped, RunnerOk)
    assert len(capped.samples_ms) == 7
    # --max-seconds stops before --min-iterations is reached (at least one sample is kept).
    proc, timed = run(
        runner,
        *base,
        "--min-iterations",
        "100000000",
        "--min-seconds",
        "0",
        "--max-seconds",
        "0.05",
    )
    assert isinstance(timed, RunnerOk), proc.stdout
    assert 1 <= len(timed.samples_ms) < 100000000


def test_profile_times_every_packed_call_separately(
    runner: Path, cnn: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.ones((1, 3, 16, 16), np.float32))
    _, report = run(
        runner,
        "--module",
        cnn[1],
        *input_args(inputs),
        "--profile",
        "--warmup",
        "1",
        "--min-iterations",
        "6",
        "--min-seconds",
        "0",
        "--max-iterations",
        "6",
    )
    assert isinstance(report, RunnerOk)
    assert report.profile is not None
    assert report.profile_iterations == len(report.samples_ms) == 6
    names = [p.name for p in report.profile]
    assert len(names) == len(set(names))
    # The kernels TVM generated appear next to the VM's builtins.
    assert any(n.startswith("vm.builtin.") for n in names)
    kernels = [p for p in report.profile if not p.name.startswith("vm.builtin.")]
    assert kernels, names
    for p in report.profile:
        assert p.calls % 6 == 0, p
        assert p.mean_ms == pytest.approx(p.total_ms / p.calls, rel=1e-3, abs=1e-6)
    totals = [p.total_ms for p in report.profile]
    assert totals == sorted(totals, reverse=True)


# ----------------------------------------------------------------------------------------------
# Failures: one JSON error, the right stage, exit status 2 (64 for usage)
# ----------------------------------------------------------------------------------------------


def test_missing_module_is_a_load_error(runner: Path, tmp_path: Path) -> None:
    report = expect_error(runner, "load", "--module", tmp_path / "absent.so")
    assert "does not exist" in report.message


def test_a_file_that_is_not_a_library_is_a_load_error(runner: Path, tmp_path: Path) -> None:
    fake = tmp_path / "model.so"
    fake.write_text("this is not an ELF file\n")
    report = expect_error(runner, "load", "--module", fake)
    assert "model.so" in report.message


def test_a_shared_library_without_a_vm_is_a_load_error(runner: Path) -> None:
    # A real shared library, but not a TVM Relax artifact.
    report = expect_error(runner, "load", "--module", runtime_libraries()[1])
    assert "vm_load_executable" in report.message


def test_unknown_entry_is_a_load_error(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.ones((1, 16), np.float32))
    report = expect_error(
        runner, "load", "--module", mlp[1], "--entry", "forward", *input_args(inputs)
    )
    assert "'forward'" in report.message


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("truncated", "truncated"),
        ("header-cut", "truncated"),
        ("bad-magic", "not a .npy"),
        ("fortran", "Fortran"),
        ("big-endian", "big-endian"),
        ("complex", "unsupported dtype"),
        ("binary-descr", "unsupported dtype"),
        ("missing", "cannot be opened"),
    ],
)
def test_bad_input_files_are_input_errors(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path, case: str, needle: str
) -> None:
    path = tmp_path / "x.npy"
    good = np.ones((1, 16), np.float32)
    if case == "truncated":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:-7])
    elif case == "header-cut":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:30])
    elif case == "bad-magic":
        path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    elif case == "fortran":
        np.save(path, np.asfortranarray(np.ones((4, 16), np.float32)))
    elif case == "big-endian":
        np.save(path, good.astype(">f4"))
    elif case == "complex":
        np.save(path, good.astype(np.complex64))
    elif case == "binary-descr":
        # Bytes that are not UTF-8 end up in the message; the report must still decode.
        np.save(path, good)
        path.write_bytes(path.read_bytes().replace(b"'<f4'", b"'\xff\xfe4'"))
    report = expect_error(runner, "input", "--module", mlp[1], "--input", path)
    assert needle in report.message
    assert "input 0" in report.message


def test_every_truncation_of_an_input_is_reported_not_crashed(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.ones((1, 16), np.float32))
    data = good.read_bytes()
    cut = tmp_path / "cut.npy"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        report = expect_error(runner, "input", "--module", mlp[1], "--input", cut)
        assert "input 0" in report.message


def test_wrong_number_of_inputs_is_an_input_error(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.ones((1, 16), np.float32), np.ones((1, 16), np.float32))
    report = expect_error(runner, "input", "--module", mlp[1], *input_args(inputs))
    assert "takes 1 input(s) but 2" in report.message


def test_wrong_shape_is_a_run_error_that_names_both_shapes(
    runner: Path, cnn: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.ones((1, 3, 32, 32), np.float32))
    report = expect_error(runner, "run", "--module", cnn[1], *input_args(inputs))
    assert "float32[1,3,32,32]" in report.message
    assert "(1, 3, 16, 16)" in report.message  # TVM's annotation of the parameter
    assert "mismatch" in report.message


def test_wrong_dtype_is_a_run_error(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    inputs = save_inputs(tmp_path, np.ones((1, 16), np.int32))
    report = expect_error(runner, "run", "--module", mlp[1], *input_args(inputs))
    assert "expect Tensor with dtype float32 but get int32" in report.message


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--module"],
        ["--module", "m.so", "--bogus"],
        ["--module", "m.so", "--warmup", "-1"],
        ["--module", "m.so", "--min-seconds", "soon"],
        ["--module", "m.so", "--min-iterations", "10", "--max-iterations", "5"],
    ],
)
def test_usage_errors_exit_64(runner: Path, args: list[str]) -> None:
    expect_error(runner, "usage", *args, exit_code=64)


def test_help_prints_usage(runner: Path) -> None:
    proc = subprocess.run([str(runner), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "--min-iterations" in proc.stdout


# ----------------------------------------------------------------------------------------------
# Build, cache, bundle
# ----------------------------------------------------------------------------------------------


def test_second_build_is_a_cache_hit(runner: Path, cache_dir: Path) -> None:
    before = runner.stat().st_mtime_ns
    again = build_host_runner(cache_dir)
    assert again == runner
    assert again.stat().st_mtime_ns == before
    assert runner.parent.parent == cache_dir / "runner"
    assert len(runner.parent.name) == 64  # sha256
    assert not [p for p in (cache_dir / "runner").iterdir() if p.name.startswith(".build-")]


def test_default_cache_comes_from_settings(
    runner: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert build_host_runner() == runner  # the settings' cache path is the default
    monkeypatch.setenv("EDGEFARM_CACHE_DIR", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    try:
        # Same source, flags and TVM: same key, built afresh under the other cache.
        moved = build_host_runner()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert moved == tmp_path / "elsewhere" / "runner" / runner.parent.name / runner.name


def test_a_source_that_does_not_compile_is_a_harness_bug(tmp_path: Path) -> None:
    source = tmp_path / "broken.cc"
    source.write_text("int main() { return undefined_name; }\n")
    with pytest.raises(HarnessBug, match="undefined_name"):
        compile_runner(source, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "runner").rglob("edgefarm-runner"))


def test_missing_compiler_is_an_infrastructure_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(InfrastructureError, match="g\\+\\+ is not installed"):
        build_host_runner(tmp_path / "cache")


def test_concurrent_builds_agree(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from harness.runner import build_host_runner; "
        "print(build_host_runner(Path(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    binary = Path(paths.pop())
    assert os.access(binary, os.X_OK)
    assert (
        "--module"
        in subprocess.run(
            [str(binary), "--help"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_bundle_runs_from_a_directory_of_copies(
    runner: Path, mlp: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy2(runner, bundle / runner.name)
    libs = runtime_libraries()
    assert [p.name for p in libs] == ["libtvm_runtime.so", "libtvm_ffi.so"]
    for lib in libs:
        shutil.copy2(lib, bundle / lib.name)
    shutil.copy2(mlp[1], bundle / "model.so")
    inputs = save_inputs(bundle, np.ones((1, 16), np.float32))
    env = {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": str(bundle), "LD_DEBUG": "libs"}
    proc, report = run(
        bundle / runner.name, "--module", bundle / "model.so", *input_args(inputs), *FAST, env=env
    )
    assert isinstance(report, RunnerOk), proc.stdout
    # The dynamic loader says which files it initialised: the copies, not the wheel's.
    for lib in libs:
        assert f"calling init: {bundle / lib.name}" in proc.stderr
        assert f"calling init: {lib}" not in proc.stderr


# ----------------------------------------------------------------------------------------------
# Parsing the report
# ----------------------------------------------------------------------------------------------


def test_parse_finds_the_report_after_log_lines() -> None:
    report = {
        "status": "ok",
        "runner_version": "1",
        "load_ms": 1.5,
        "first_ms": 2.0,
        "warmup": 1,
        "samples_ms": [1.0, 1.1],
        "peak_rss_kb": 5000,
        "outputs": [{"file": "out0.npy", "dtype": "float32", "shape": [1]}],
        "inputs": [],
        "a_future_field": {"ignored": True},
    }
    stdout = '[12:00:00] runtime.cc:1: {"status" in a log line\nanother log\n' + json.dumps(report)
    parsed = parse_runner_output(stdout)
    assert isinstance(parsed, RunnerOk)
    assert parsed.samples_ms == [1.0, 1.1]


def test_parse_error_form() -> None:
    parsed = parse_runner_output(
        '{"status":"error","runner_version":"1","stage":"input","message":"input 0 is bad"}\n'
    )
    assert isinstance(parsed, RunnerError)
    assert (parsed.stage, parsed.message) == ("input", "input 0 is bad")


def test_parse_without_a_report_is_an_infrastructure_error() -> None:
    with pytest.raises(InfrastructureError, match="SIGSEGV") as info:
        parse_runner_output("loading...\n", stderr="Segmentation fault\n", returncode=-11)
    assert info.value.stage == "run"
    with pytest.raises(InfrastructureError):
        parse_runner_output('{"status":"ok","samples_ms":[1.0,')


def test_parse_of_a_malformed_report_is_a_harness_bug() -> None:
    with pytest.raises(HarnessBug):
        parse_runner_output('{"status":"ok","runner_version":"1"}')


def test_relax_vm_in_python_agrees_with_the_runner(
    runner: Path, nested: Path, tmp_path: Path
) -> None:
    """The runner's outputs equal what TVM's own Python VM returns for the same artifact."""
    rng = np.random.default_rng(6)
    arrays = [
        rng.integers(-5, 5, (2, 3)).astype(np.int8),
        rng.integers(0, 5, (4,)).astype(np.uint8),
        rng.standard_normal((2, 2)).astype(np.float16),
        np.array([False, False, True]),
        np.array([1, 2], dtype=np.int64),
        np.array([[3, 4]], dtype=np.int32),
    ]
    inputs = save_inputs(tmp_path / "in", *arrays)
    _, report = run(
        runner, "--module", nested, *input_args(inputs), "--output-dir", tmp_path, *FAST
    )
    assert isinstance(report, RunnerOk)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(nested)), tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])

    def flatten(value: Any) -> list[np.ndarray]:
        if isinstance(value, tvm.runtime.Tensor):
            return [value.numpy()]
        return [leaf for item in value for leaf in flatten(item)]

    for i, want in enumerate(flatten(result)):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), want)
