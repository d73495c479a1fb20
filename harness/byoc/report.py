"""The partition report: what went to the accelerator, what stayed on the CPU and why.

Stored in the artifact's manifest (``extra.partition``) and copied into each result document
(``partition``). Keys: ``subgraphs``, ``ops_offloaded``, ``ops_total``, ``by_op_type``
({op: {offloaded, total}}), ``macs_offloaded_share`` (0..1), ``boundary_tensors``,
``boundary_bytes`` (tensors crossing CPU <-> accelerator per inference, weights excluded),
``cpu_ops`` ([{op, reason, detail}], reason one of :data:`REASONS`), plus ``dialect``,
``feature_level`` and ``mode``; in mode ``cost`` also ``predicted_ms``, ``cost`` (the
decision: :class:`CostReport`) and, once a run measured it, ``measured_ms``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from harness.byoc.translate import REASONS, Refused, is_const_tensor, op_name
from harness.partition_report import (
    BoundaryCost,
    CalibrationReport,
    CandidateCost,
    CostDecisionReport,
    CostReport,
    CpuOp,
    OpCount,
    PartitionReport,
    SubgraphCost,
)

__all__ = [
    "REASONS",
    "BoundaryCost",
    "CalibrationReport",
    "CandidateCost",
    "CostDecisionReport",
    "CostReport",
    "CpuOp",
    "OpCount",
    "PartitionReport",
    "SubgraphCost",
    "build_report",
    "op_calls",
]


_DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "int64": 8,
    "int32": 4,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}


def short_op(name: str) -> str:
    """``relax.nn.conv2d`` -> ``nn.conv2d``."""
    return name.removeprefix("relax.")


def _bindings(func: Any) -> Iterator[Any]:
    from tvm import relax

    body = func.body
    if isinstance(body, relax.SeqExpr):
        for block in body.blocks:
            yield from block.bindings


def op_calls(func: Any) -> Iterator[tuple[Any, Any]]:
    """(bound var, call) of every operator call in ``func``, composites included."""
    from tvm import relax

    # MergeCompositeFunctions binds each composite once and may call it several times: count
    # the operators of every call, not of every definition.
    local: dict[Any, Any] = {}
    for binding in _bindings(func):
        value = binding.value
        if isinstance(value, relax.Function):
            local[binding.var] = value
        elif isinstance(value, relax.Call) and value.op in local:
            yield from op_calls(local[value.op])
        elif isinstance(value, relax.Call) and op_name(value):
            yield binding.var, value


def _shape(expr: Any) -> tuple[int, ...] | None:
    from tvm import relax

    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or not isinstance(sinfo.shape, relax.ShapeExpr):
        return None
    dims = []
    for d in sinfo.shape.values:
        if not hasattr(d, "value"):
            return None
        dims.append(int(d.value))
    return tuple(dims)


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def macs_of(call: Any) -> int:
    """Multiply-accumulates of a conv2d or matmul call (0 for everything else)."""
    name = op_name(call)
    out = _shape(call)
    if out is None:
        return 0
    if name == "relax.nn.conv2d":
        w = _shape(call.args[1])
        return _prod(out) * (_prod(w[1:]) if w else 0)
    if name == "relax.matmul":
        a = _shape(call.args[0])
        return _prod(out) * (a[-1] if a else 0)
    return 0


def tensor_bytes(expr: Any) -> int:
    """Bytes of a tensor (or tuple of tensors) with a static shape; 0 when unknown."""
    from tvm import relax

    sinfo = expr.ty
    if isinstance(sinfo, relax.TupleType):
        return sum(_bytes_of_sinfo(f) for f in sinfo.fields)
    return _bytes_of_sinfo(sinfo)


def _bytes_of_sinfo(sinfo: Any) -> int:
    from tvm import relax

    if not isinstance(sinfo, relax.TensorType) or not isinstance(sinfo.shape, relax.ShapeExpr):
        return 0
    dims = tuple(int(d.value) for d in sinfo.shape.values if hasattr(d, "value"))
    return _prod(dims) * _DTYPE_BYTES.get(str(sinfo.dtype), 4)


def _count_outputs(expr: Any) -> int:
    from tvm import relax

    sinfo = expr.ty
    return len(sinfo.fields) if isinstance(sinfo, relax.TupleType) else 1


def build_report(
    original: Any,
    partitioned: Any,
    *,
    refusals: dict[str, Refused],
    dialect: str,
    feature_level: int | None,
    mode: str,
    table: str,
    excluded: dict[str, tuple[str, int]] | None = None,
) -> PartitionReport:
    """Compare ``original`` main with ``partitioned`` (after MergeCompositeFunctions)."""
    from tvm import relax

    by_type: dict[str, OpCount] = {}
    macs_total = 0
    for _, call in op_calls(original["main"]):
        entry = by_type.setdefault(short_op(op_name(call)), {"offloaded": 0, "total": 0})
        entry["total"] += 1
        macs_total += macs_of(call)

    offloaded_funcs = {
        gv: func
        for gv, func in partitioned.functions.items()
        if isinstance(func, relax.Function) and func.attrs and "Codegen" in func.attrs
    }
    macs_offloaded = 0
    ops_offloaded = 0
    for func in offloaded_funcs.values():
        for _, call in op_calls(func):
            name = short_op(op_name(call))
            by_type.setdefault(name, {"offloaded": 0, "total": 0})["offloaded"] += 1
            ops_offloaded += 1
            macs_offloaded += macs_of(call)

    cpu_ops: list[CpuOp] = []
    boundary_tensors = 0
    boundary_bytes = 0
    for binding in _bindings(partitioned["main"]):
        value = binding.value
        if not isinstance(value, relax.Call):
            continue
        if isinstance(value.op, relax.GlobalVar) and value.op in offloaded_funcs:
            for arg in value.args:
                if not is_const_tensor(arg):
                    boundary_tensors += 1
                    boundary_bytes += tensor_bytes(arg)
            boundary_tensors += _count_outputs(value)
            boundary_bytes += tensor_bytes(value)
            continue
        name = op_name(value)
        if not name:
            continue
        refusal = refusals.get(binding.var.name)
        if excluded and name in excluded:
            pattern, level = excluded[name]
            cpu_ops.append(
                {
                    "op": short_op(name),
                    "reason": "unsupported operator",
                    "detail": f"{pattern} needs NNAPI feature level {level}; the target has "
                    f"{feature_level}",
                }
            )
        elif refusal is not None:
            cpu_ops.append(
                {"op": short_op(name), "reason": refusal.reason, "detail": refusal.detail}
            )
        else:
            cpu_ops.append(
                {
                    "op": short_op(name),
                    "reason": "unsupported operator",
                    "detail": f"no pattern of the {table} table covers it here",
                }
            )

    ops_total = sum(e["total"] for e in by_type.values())
    return {
        "dialect": dialect,
        "feature_level": feature_level,
        "mode": mode,
        "subgraphs": len(offloaded_funcs),
        "ops_offloaded": ops_offloaded,
        "ops_total": ops_total,
        "by_op_type": dict(sorted(by_type.items())),
        "macs_offloaded_share": round(macs_offloaded / macs_total, 6) if macs_total else 0.0,
        "boundary_tensors": boundary_tensors,
        "boundary_bytes": boundary_bytes,
        "cpu_ops": cpu_ops,
    }


def in_declared_order(report: PartitionReport) -> PartitionReport:
    """``report`` with its keys (and its operator entries' keys) in the order declared above,
    whatever order it was stored in: a report read back from an artifact's manifest must give
    a result document the same shape as a report just built."""
    out = {key: report[key] for key in PartitionReport.__annotations__ if key in report}  # type: ignore[literal-required]
    out.update({key: value for key, value in report.items() if key not in out})
    if isinstance(out.get("cpu_ops"), list):
        out["cpu_ops"] = [
            {**{k: op[k] for k in CpuOp.__annotations__ if k in op}, **op} for op in out["cpu_ops"]
        ]
    if isinstance(out.get("by_op_type"), dict):
        out["by_op_type"] = {
            name: {**{k: c[k] for k in OpCount.__annotations__ if k in c}, **c}
            for name, c in out["by_op_type"].items()
        }
    return out  # type: ignore[return-value]
