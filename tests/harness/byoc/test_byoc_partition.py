"""Partitioning for NNAPI and Neuron, checked against what each graph contains: operator counts
by type, which operators stay on the CPU and why, the NNAPI feature-level filter, and
agreement with TVM's own ``partition_for_nnapi`` (plus edgefarm's additions to its table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest

from harness.byoc import partition
from harness.byoc.report import op_calls, short_op
from harness.byoc.translate import REASONS, op_name
from harness.errors import JobError
from harness.modelio import load, to_relax

import byoc_models
import testmodels


def _relax(model: onnx.ModelProto, tmp_path: Path, name: str) -> Any:
    return to_relax(load(testmodels.save(model, tmp_path, name)))


def _report(model: onnx.ModelProto, tmp_path: Path, dialect: str, **options: Any) -> Any:
    return partition(_relax(model, tmp_path, "m"), dialect, options).report


def _check_consistent(report: dict[str, Any]) -> None:
    by_type = report["by_op_type"]
    assert report["ops_total"] == sum(e["total"] for e in by_type.values())
    assert report["ops_offloaded"] == sum(e["offloaded"] for e in by_type.values())
    assert len(report["cpu_ops"]) == report["ops_total"] - report["ops_offloaded"]
    assert all(c["reason"] in REASONS for c in report["cpu_ops"])
    assert 0.0 <= report["macs_offloaded_share"] <= 1.0


def test_mobilenet_like_on_nnapi_and_neuron(tmp_path: Path) -> None:
    nnapi = _report(testmodels.mobilenet_like(), tmp_path, "nnapi")
    neuron = _report(testmodels.mobilenet_like(), tmp_path, "neuron")
    for report in (nnapi, neuron):
        _check_consistent(report)
        # 3 convs, 3 adds (2 biases, the residual), relu, mean, reshape, matmul, softmax.
        assert report["ops_total"] == 11
        assert report["by_op_type"]["nn.conv2d"]["total"] == 3
        assert report["by_op_type"]["add"]["total"] == 3
    # Both tables have depthwise conv without bias and reshape (NNAPI's: edgefarm's additions
    # to TVM's, which has conv2d only followed by add, and no reshape): everything offloads,
    # in one subgraph.
    for report in (nnapi, neuron):
        assert report["ops_offloaded"] == 11
        assert report["cpu_ops"] == []
        assert report["macs_offloaded_share"] == 1.0
        assert report["subgraphs"] == 1
        assert report["boundary_tensors"] == 2  # the input and the output


def test_our_nnapi_partition_agrees_with_tvms_partition_for_nnapi(tmp_path: Path) -> None:
    from tvm import relax
    from tvm.relax.backend.contrib.nnapi import partition_for_nnapi

    mod = relax.transform.FoldConstant()(_relax(testmodels.mobilenet_like(), tmp_path, "m"))
    theirs = partition_for_nnapi(mod, feature_level=7)
    ours = partition(mod, "nnapi", {"feature_level": 7}).report

    offloaded_by_tvm = sorted(
        short_op(op_name(call))
        for _, func in theirs.functions.items()
        if isinstance(func, relax.Function) and func.attrs and "Codegen" in func.attrs
        for _, call in op_calls(func)
    )
    # Nothing in this graph is refused by the codegen: we offload what TVM's
    # partition_for_nnapi offloads, and what edgefarm's additions to its table add (the
    # depthwise conv2d without a bias, the reshape), no more.
    assert len(offloaded_by_tvm) == 9
    ours_by_type = {op: c["offloaded"] for op, c in ours["by_op_type"].items()}
    tvm_by_type = {op: offloaded_by_tvm.count(op) for op in set(offloaded_by_tvm)}
    tvm_by_type["nn.conv2d"] += 1
    tvm_by_type["reshape"] = tvm_by_type.get("reshape", 0) + 1
    assert ours_by_type == tvm_by_type


def test_an_unsupported_operator_in_the_middle_stays_on_the_cpu(tmp_path: Path) -> None:
    for dialect in ("nnapi", "neuron"):
        report = _report(byoc_models.sin_in_the_middle(), tmp_path, dialect)
        _check_consistent(report)
        assert report["subgraphs"] == 2  # before and after the Sin
        assert [c["op"] for c in report["cpu_ops"]] == ["sin"]
        assert report["cpu_ops"][0]["reason"] == "unsupported operator"


def test_the_transposed_matmul_and_pool_concat(tmp_path: Path) -> None:
    neuron = _report(byoc_models.transposed_matmul(), tmp_path, "neuron")
    _check_consistent(neuron)
    assert neuron["by_op_type"]["matmul"] == {"offloaded": 2, "total": 2}
    assert neuron["by_op_type"]["permute_dims"] == {"offloaded": 1, "total": 1}
    pools = _report(byoc_models.pool_concat(), tmp_path, "neuron")
    _check_consistent(pools)
    assert pools["ops_offloaded"] == pools["ops_total"]
    for op in ("nn.max_pool2d", "nn.avg_pool2d", "concat", "mean", "sigmoid"):
        assert pools["by_op_type"][op]["offloaded"] == 1, op
    # Average pooling and concatenation are NNAPI's from level 1 (edgefarm's additions).
    nnapi = _report(byoc_models.pool_concat(), tmp_path, "nnapi", feature_level=1)
    _check_consistent(nnapi)
    for op in ("nn.max_pool2d", "nn.avg_pool2d", "concat", "sigmoid"):
        assert nnapi["by_op_type"][op]["offloaded"] == 1, op
    assert [c["op"] for c in nnapi["cpu_ops"]] == ["mean"]  # MEAN came with level 2
    assert "feature level 2" in nnapi["cpu_ops"][0]["detail"]


def test_a_lower_feature_level_offloads_less(tmp_path: Path) -> None:
    mod = _relax(byoc_models.transposed_matmul(), tmp_path, "tm")
    new = partition(mod, "nnapi", {"feature_level": 7}).report
    old = partition(mod, "nnapi", {"feature_level": 5}).report
    assert new["ops_offloaded"] == new["ops_total"]
    # q @ k^T is a BATCH_MATMUL, which came with level 6; the Gemm is a FULLY_CONNECTED
    # layer, NNAPI's from level 1.
    assert [c["op"] for c in old["cpu_ops"]] == ["matmul"]
    assert "feature level 6" in old["cpu_ops"][0]["detail"]
    assert old["by_op_type"]["matmul"] == {"offloaded": 1, "total": 2}
    assert old["subgraphs"] == 2 and new["subgraphs"] == 1
    mlp = partition(_relax(testmodels.mlp(), tmp_path, "mlp"), "nnapi", {"feature_level": 1})
    assert mlp.report["ops_offloaded"] == mlp.report["ops_total"] == 5


def test_nothing_to_offload_and_dtype_refusals(tmp_path: Path) -> None:
    for dialect in ("nnapi", "neuron"):
        report = _report(byoc_models.nothing_to_offload(), tmp_path, dialect)
        assert report["subgraphs"] == 0
        assert report["ops_offloaded"] == 0
        assert report["macs_offloaded_share"] == 0.0
        assert {c["op"] for c in report["cpu_ops"]} == {"sin", "cos"}
    ints = _report(byoc_models.int_add(), tmp_path, "nnapi")
    assert ints["cpu_ops"][0]["op"] == "add"
    assert ints["cpu_ops"][0]["reason"] == "dtype"


def test_bad_partition_options_are_job_errors(tmp_path: Path) -> None:
    mod = _relax(testmodels.mlp(), tmp_path, "mlp")
    with pytest.raises(JobError) as err:
        partition(mod, "nnapi", {"feature_level": None})
    assert err.value.stage == "partition"
    with pytest.raises(JobError, match="preference"):
        partition(mod, "neuron", {"preference": "turbo"})
    with pytest.raises(JobError, match="mode 'greedy' is not available"):
        partition(mod, "neuron", {"partition": "greedy"})


def test_repeated_composites_are_counted_per_call(tmp_path: Path) -> None:
    """DS-CNN's four identical depthwise blocks share composite definitions after merging."""
    from harness.examples import write_example

    mod = to_relax(load(write_example("ds-cnn", tmp_path)))
    report = partition(mod, "neuron", {}).report
    _check_consistent(report)
    assert report["ops_total"] == 32
    assert report["ops_offloaded"] == 32
    assert report["by_op_type"]["nn.conv2d"] == {"offloaded": 9, "total": 9}
    assert report["subgraphs"] == 1


def test_a_phone_build_without_the_neuron_library_is_a_link_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.byoc.link import NEURON_INCLUDE_ENV, NEURON_LIB_ENV, android_link_args

    monkeypatch.delenv(NEURON_LIB_ENV, raising=False)
    with pytest.raises(JobError) as err:
        android_link_args("neuron", {"neuron_lib": None})
    assert err.value.stage == "link"
    assert "libneuron_adapter.so" in err.value.message
    with pytest.raises(JobError, match="does not exist"):
        android_link_args("neuron", {"neuron_lib": str(tmp_path / "libneuron_adapter.so")})
    lib = tmp_path / "libneuron_adapter.so"
    lib.write_bytes(b"")
    monkeypatch.delenv(NEURON_INCLUDE_ENV, raising=False)
    with pytest.raises(JobError, match=r"NeuronAdapter\.h"):  # the vendor's header is needed too
        android_link_args("neuron", {"neuron_lib": str(lib)})
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "NeuronAdapter.h").write_text("")
    args = android_link_args("neuron", {"neuron_lib": str(lib)})
    assert str(lib) in args and f"-I{tmp_path / 'include'}" in args
    assert android_link_args("nnapi", {}) == ["-lneuralnetworks"]
