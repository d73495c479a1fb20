"""Offload candidates of a model: their description, the calibration modules that time them,
and the cost decision over them.

A candidate is a match the codegen accepted (:class:`harness.byoc.partition.Match`).
:func:`calibration_module` builds a module with one public function per candidate
(``cal_0``, ``cal_1``, ...: the candidate's operators alone, constants bound, the outside
inputs as parameters) and boundary probes (``probe_0..2``: a ReLU on 2 KiB, 64 KiB and
512 KiB). Built for the CPU it also keeps ``main`` (the whole model: the baseline); built for
the accelerator each function is partitioned like any model, so each ``cal_k`` is one
offloaded call (no merging: every function is one candidate). The runner times each with
``--entry``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.byoc.costmodel import Candidate, Costs, Planner, Prediction
from harness.byoc.report import CostDecisionReport, short_op, tensor_bytes
from harness.byoc.translate import Refused, flat_args, is_const_tensor, op_name
from harness.errors import JobError
from harness.partition_report import (
    CalibrationEntry,
    CalibrationInfo,
    ProbeEntry,
)

CALIBRATION_ATTR = "edgefarm_calibration"
# Boundary probes: NCHW float32 shapes of 2 KiB, 64 KiB and 512 KiB.
PROBE_SHAPES = ((1, 8, 8, 8), (1, 16, 32, 32), (1, 32, 64, 64))


def _ty_text(expr: Any) -> str:
    from tvm import relax

    sinfo = expr.ty
    if isinstance(sinfo, relax.TensorType) and isinstance(sinfo.shape, relax.ShapeExpr):
        dims = "x".join(str(d) for d in sinfo.shape.values)
        return f"{dims}:{sinfo.dtype}"
    return str(sinfo)


def signature(bindings: Sequence[tuple[Any, Any]], outside: Sequence[Any]) -> str:
    """What a candidate's cost depends on: its operators, their attributes and the shapes and
    dtypes of everything they touch (not weight values, not var names)."""
    index = {var: i for i, (var, _) in enumerate(bindings)}
    external = {expr: j for j, expr in enumerate(outside)}
    parts = []
    for var, call in bindings:
        args = []
        for arg in flat_args(call):
            if arg in index:
                args.append(f"b{index[arg]}")
            elif is_const_tensor(arg):
                args.append(f"c:{_ty_text(arg)}")
            elif arg in external:
                args.append(f"i{external[arg]}:{_ty_text(arg)}")
            else:  # shapes, immediates
                args.append(str(arg))
        parts.append(f"{op_name(call)}({','.join(args)}){call.attrs}->{_ty_text(var)}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:24]


def _main_bindings(mod: Any) -> tuple[list[Any], Any]:

    body = mod["main"].body
    bindings = [b for block in body.blocks for b in block.bindings]
    return bindings, body.body


def describe(mod: Any, matches: Sequence[Any]) -> list[Candidate]:
    """The candidates of ``matches`` in ``mod``'s main, with who uses each output."""
    from tvm import relax

    bindings, result = _main_bindings(mod)
    member_of: dict[str, int] = {}
    for k, match in enumerate(matches):
        for var, _ in match.bindings:
            member_of[var.name] = k
    users: dict[str, set[str]] = {}
    for binding in bindings:
        value = binding.value
        if not isinstance(value, relax.Call):
            continue
        for arg in flat_args(value):
            if isinstance(arg, relax.Var):
                users.setdefault(arg.name, set()).add(binding.var.name)
    results = result.fields if isinstance(result, relax.Tuple) else [result]
    outputs = {r.name for r in results if isinstance(r, relax.Var)}

    described = []
    for k, match in enumerate(matches):
        root = match.root.name
        user_groups = {member_of.get(u, -1) for u in users.get(root, set())} - {k}
        described.append(
            Candidate(
                name=root,
                ops=tuple(short_op(op_name(expr)) for _, expr in match.bindings),
                signature=signature(match.bindings, match.outside),
                members=tuple(var.name for var, _ in match.bindings),
                inputs=tuple(
                    (expr.name, tensor_bytes(expr))
                    for expr in match.outside
                    if isinstance(expr, relax.Var)
                ),
                output_bytes=tensor_bytes(match.root),
                users=tuple(sorted(matches[g].root.name for g in user_groups if g >= 0)),
                used_outside=root in outputs or -1 in user_groups,
            )
        )
    return described


def _candidate_function(match: Any, name: str) -> Any:
    """A public Relax function computing ``match`` alone."""
    from tvm import relax

    params = [
        relax.Var(f"x{i}", expr.ty)
        for i, expr in enumerate(e for e in match.outside if isinstance(e, relax.Var))
    ]
    scope: dict[Any, Any] = dict(
        zip((e for e in match.outside if isinstance(e, relax.Var)), params, strict=True)
    )

    def remap(expr: Any) -> Any:
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([remap(f) for f in expr.fields])
        return scope.get(expr, expr)

    bb = relax.BlockBuilder()
    with bb.function(name, params):
        with bb.dataflow():
            for var, call in match.bindings:
                new_call = relax.Call(
                    call.op, [remap(a) for a in call.args], call.attrs, call.ty_args
                )
                scope[var] = bb.emit(new_call)
            out = bb.emit_output(scope[match.root])
        bb.emit_func_output(out)
    return bb.get()[name]


def _probe_function(name: str, shape: tuple[int, ...]) -> Any:
    from tvm import relax

    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    bb = relax.BlockBuilder()
    with bb.function(name, [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(out)
    return bb.get()[name]


def _shape_of(expr: Any) -> list[int]:
    return [int(d) for d in expr.ty.shape.values]


def calibration_module(
    mod: Any, matches: Sequence[Any], opts: Any, *, accel: bool = False
) -> tuple[Any, CalibrationInfo]:
    """The calibration module of ``mod`` and what it holds (see the module doc)."""
    import tvm
    from tvm import relax

    candidates = describe(mod, matches)
    functions: dict[str, object] = {}  # TVM Relax functions by name
    entries: list[CalibrationEntry] = []
    for k, (match, cand) in enumerate(zip(matches, candidates, strict=True)):
        name = f"cal_{k}"
        functions[name] = _candidate_function(match, name)
        entries.append(
            {
                "name": name,
                "candidate": cand.name,
                "signature": cand.signature,
                "inputs": [
                    {"shape": _shape_of(e), "dtype": str(e.ty.dtype)}
                    for e in match.outside
                    if isinstance(e, relax.Var)
                ],
            }
        )
    probes: list[ProbeEntry] = []
    for k, shape in enumerate(PROBE_SHAPES):
        name = f"probe_{k}"
        functions[name] = _probe_function(name, shape)
        nbytes = 4
        for d in shape:
            nbytes *= d
        probes.append({"name": name, "shape": list(shape), "bytes": 2 * nbytes})
    table = {tvm.ir.GlobalVar(n): f for n, f in functions.items()}
    if not accel:
        # The baseline is the model itself, with the TIR functions its call_tir name (an
        # operator the importer lowered, which no candidate holds), under their own GlobalVars.
        table.update(
            {gv: f for gv, f in mod.functions.items() if not isinstance(f, relax.Function)}
        )
        table[mod.get_global_var("main")] = mod["main"]
    module = tvm.IRModule(table)
    info: CalibrationInfo = {
        "placement": "accel" if accel else "cpu",
        "dialect": opts.dialect,
        "candidates": [c.to_dict() for c in candidates],
        "entries": entries,
        "probes": probes,
        "baseline": None if accel else "main",
    }
    module = module.with_attr(CALIBRATION_ATTR, json.dumps(info))
    return module, info


def calibration_of(mod: Any) -> CalibrationInfo | None:
    """The calibration description a lowered module carries, if any."""
    if mod.attrs is None or CALIBRATION_ATTR not in mod.attrs:
        return None
    info: CalibrationInfo = json.loads(str(mod.attrs[CALIBRATION_ATTR]))
    return info


@dataclass
class CostDecision:
    """What the cost model chose, and why the rest stays on the CPU."""

    candidates: list[Candidate]
    costs: Costs
    chosen: Prediction
    everything: Prediction
    keep_on_cpu: dict[str, Refused]

    def report(self) -> CostDecisionReport:
        """Keys added to the partition report in mode ``cost``."""
        costs = self.costs
        return {
            "predicted_ms": round(self.chosen.latency_ms, 6),
            "cost": {
                "device_class": costs.device_class,
                "predicted_cpu_only_ms": round(costs.baseline_ms, 6),
                "predicted_all_ms": round(self.everything.latency_ms, 6),
                "boundary": {
                    "fixed_ms": round(costs.boundary.fixed_ms, 6),
                    "ms_per_kib": round(costs.boundary.ms_per_byte * 1024, 6),
                },
                "candidates": [
                    {
                        "ops": list(c.ops),
                        "offloaded": c.name in self.chosen.offloaded,
                        "cpu_ms": round(costs.cpu_ms[c.signature], 6),
                        "accel_ms": round(costs.accel_ms[c.signature], 6),
                    }
                    for c in self.candidates
                ],
                "subgraphs": [
                    {
                        "ops": sum(len(self._by_name[m].ops) for m in g.members),
                        "accel_ms": round(g.accel_ms, 6),
                        "boundary_bytes": g.boundary_bytes,
                        "boundary_ms": round(g.boundary_ms, 6),
                    }
                    for g in self.chosen.subgraphs
                ],
            },
        }

    @property
    def _by_name(self) -> dict[str, Candidate]:
        return {c.name: c for c in self.candidates}


def decide(mod: Any, matches: Sequence[Any], opts: Any, costs_given: object) -> CostDecision:
    """Choose which matches to offload from measured costs (see :mod:`costmodel`)."""
    if not costs_given:
        raise JobError(
            "partition",
            "partition mode 'cost' needs per-operator costs measured on the device class; "
            "edgefarm bench and the farm measure them on the device first (calibration)",
        )
    try:
        costs = Costs.from_dict(costs_given)
    except (KeyError, TypeError, ValueError) as exc:
        raise JobError("partition", f"the costs given are malformed ({exc})") from None
    candidates = describe(mod, matches)
    missing = costs.missing(candidates)
    if missing:
        ops = ", ".join("+".join(c.ops) for c in missing[:5])
        raise JobError(
            "partition",
            f"no measured costs on {costs.device_class} for {len(missing)} operator group(s) "
            f"({ops}); calibrate on a device of that class first",
        )
    planner = Planner(candidates, costs)
    chosen = planner.choose()
    everything = planner.predict(c.name for c in candidates)
    keep: dict[str, Refused] = {}
    for c in candidates:
        if c.name in chosen.offloaded:
            continue
        with_it = planner.predict(chosen.offloaded | {c.name}).latency_ms
        refusal = Refused(
            "cost decision",
            f"on {costs.device_class}: CPU {costs.cpu_ms[c.signature]:.4f} ms, accelerator "
            f"{costs.accel_ms[c.signature]:.4f} ms plus boundary transfer; offloading it "
            f"predicts {with_it:.4f} ms against {chosen.latency_ms:.4f} ms",
        )
        for member in c.members:
            keep[member] = refusal
    return CostDecision(candidates, costs, chosen, everything, keep)
