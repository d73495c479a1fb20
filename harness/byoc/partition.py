"""Partitioning a Relax module for an NNAPI-family accelerator, and the report of it.

Steps: normalise the module (:mod:`harness.byoc.normalize`: constants folded, so a bias
``reshape(const)`` is a constant; the importer's ``call_tir`` clips raised back to Relax),
match the dialect's pattern table with a check that runs the codegen's own translation on
every candidate (a refusal keeps the operators on the CPU and records why),
``FuseOpsByPattern(bind_constants=False)``, ``MergeCompositeFunctions``, one offloaded function
per call site, mark which arguments of each offloaded function are constants (their data is
read once, when the accelerator model is built) and ``RunCodegen``.

``mode`` selects how candidates are chosen. ``"all"`` offloads every supported match.
``"cost"`` first finds the candidates (a match-only pass), lets :mod:`harness.byoc.costmodel`
choose which to offload from costs measured on the device class (``options["costs"]``, filled
in by :mod:`harness.measure.calibration`), then partitions again refusing the others with reason
``cost decision``. ``"calibrate-cpu"`` and ``"calibrate-accel"`` are internal: they build the
calibration modules (:mod:`harness.byoc.candidates`) whose functions calibration times.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from harness.byoc.codegen import CONST_PARAMS_ATTR, CONST_SCALARS_ATTR, register_codegens
from harness.byoc.dialect import DEFAULT_FEATURE_LEVEL, DIALECTS, NEURON_LEVEL, PREFERENCES
from harness.byoc.normalize import normalize, scalar_value
from harness.byoc.patterns import neuron_patterns, nnapi_excluded, nnapi_patterns
from harness.byoc.report import PartitionReport, build_report
from harness.byoc.translate import (
    Const,
    NNModel,
    Refused,
    Value,
    is_const_tensor,
    tensor_shape,
    translate_bindings,
)
from harness.errors import JobError
from harness.jsontypes import BackendOptions
from harness.partition_report import CalibrationInfo

log = logging.getLogger(__name__)

MODES = ("all", "cost")
CALIBRATION_MODES = ("calibrate-cpu", "calibrate-accel")
REPORT_ATTR = "edgefarm_partition_report"
# NNAPI feature levels edgefarm knows (Android 8.1 .. 15).
FEATURE_LEVELS = range(1, 9)


@dataclass(frozen=True)
class PartitionOptions:
    dialect: str
    feature_level: int
    preference: str
    mode: str

    @classmethod
    def from_backend(cls, dialect: str, options: BackendOptions) -> PartitionOptions:
        """Validated options; a bad value is a JobError (stage partition)."""
        level_given = options.get("feature_level", DEFAULT_FEATURE_LEVEL)
        if dialect == "nnapi":
            if level_given is None:
                raise JobError(
                    "partition",
                    "tvm-nnapi needs an NNAPI feature level, and the target has none (NNAPI "
                    "exists from Android SDK level 27)",
                )
            try:
                if not isinstance(level_given, int | float | str):
                    raise TypeError(level_given)
                level = int(level_given)
            except (TypeError, ValueError):
                raise JobError(
                    "partition", f"feature_level must be an integer, not {level_given!r}"
                ) from None
            if level not in FEATURE_LEVELS:
                raise JobError(
                    "partition",
                    f"NNAPI feature level {level} is unknown (known: "
                    f"{FEATURE_LEVELS.start}..{FEATURE_LEVELS.stop - 1})",
                )
        else:
            level = NEURON_LEVEL
        preference = str(options.get("preference", "fast_single_answer"))
        if preference not in PREFERENCES:
            raise JobError(
                "partition",
                f"unknown preference {preference!r} (one of {', '.join(PREFERENCES)})",
            )
        mode = str(options.get("partition", options.get("mode", "all")))
        if mode not in MODES + CALIBRATION_MODES:
            raise JobError(
                "partition", f"partition mode {mode!r} is not available (modes: {', '.join(MODES)})"
            )
        return cls(dialect, level, preference, mode)


def _matched_bindings(context: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """The fused bindings of a match in dependency order, and the root's var."""
    from tvm import relax

    matched = {var: expr for var, expr in context.matched_bindings.items()}
    root = context.matched_expr
    root_var = None
    for var, expr in matched.items():
        if expr.same_as(root):
            root_var = var
    if root_var is None:
        root_var = context.value_to_bound_var.get(root, None)
    if root_var is None:
        root_var = relax.Var("root", root.ty)
    by_var = {var: expr for var, expr in matched.items()}
    order: list[tuple[Any, Any]] = []
    seen: set[Any] = set()

    def visit(var: Any, expr: Any) -> None:
        if var in seen:
            return
        seen.add(var)
        args: list[Any] = []
        for arg in expr.args:
            args.extend(arg.fields if isinstance(arg, relax.Tuple) else [arg])
        for arg in args:
            if isinstance(arg, relax.Var) and arg in by_var and arg not in seen:
                visit(arg, by_var[arg])
        order.append((var, expr))

    visit(root_var, root)
    return order, root_var


@dataclass
class Match:
    """A match the checker accepted: its bindings in order, its root var and the values it
    takes from outside (constants included)."""

    bindings: list[tuple[Any, Any]]
    root: Any
    outside: list[Any]


class _Checker:
    """The FusionPattern check: can the codegen emit this match? Records refusals, and the
    matches it accepted. ``keep_on_cpu`` (var name -> Refused) refuses every match that
    touches one of those vars: the cost decision."""

    def __init__(
        self, options: PartitionOptions, keep_on_cpu: dict[str, Refused] | None = None
    ) -> None:
        self.options = options
        self.keep_on_cpu = keep_on_cpu or {}
        self.refusals: dict[str, Refused] = {}
        self.accepted: list[Match] = []

    def __call__(self, context: Any) -> bool:
        from tvm.relax.backend.utils import has_leaking_intermediate_variables

        if has_leaking_intermediate_variables(context):
            return False
        bindings, root_var = _matched_bindings(context)
        kept = [var.name for var, _ in bindings if var.name in self.keep_on_cpu]
        if kept:
            for name in kept:
                self.refusals[name] = self.keep_on_cpu[name]
            return False
        model = NNModel(self.options.dialect, self.options.feature_level)
        outside: dict[Any, Value] = {}

        def lookup(expr: Any) -> Value:
            if expr not in outside:
                shape = tensor_shape(expr, "an input")
                if is_const_tensor(expr):
                    outside[expr] = Const(-1, shape, scalar_value(expr))
                else:
                    outside[expr] = model.new_tensor(shape)
            return outside[expr]

        try:
            translate_bindings(model, bindings, lookup, {root_var})
        except Refused as exc:
            names = [
                var.name for var, expr in bindings if exc.call is None or expr.same_as(exc.call)
            ]
            for name in names:
                self.refusals[name] = exc
            return False
        self.accepted.append(Match(bindings, root_var, list(outside)))
        return True


@dataclass
class Partitioned:
    """A lowered module and what its partition did (a calibration build: what it holds)."""

    mod: Any
    report: PartitionReport | CalibrationInfo


def _fuse(
    mod: Any, dialect: str, checker: _Checker, *, merge: bool = True
) -> tuple[Any, str, dict[str, tuple[str, int]]]:
    """FuseOpsByPattern + MergeCompositeFunctions with the dialect's table. Without ``merge``
    every match becomes its own offloaded function (and ``main`` is not needed)."""
    from tvm import relax

    excluded: dict[str, tuple[str, int]] = {}
    if dialect == "nnapi":
        patterns = nnapi_patterns(checker.options.feature_level, checker)
        table = "TVM NNAPI"
        excluded = nnapi_excluded(checker.options.feature_level)
    else:
        patterns = neuron_patterns(checker)
        table = "edgefarm Neuron"
    fused = relax.transform.FuseOpsByPattern(
        patterns, bind_constants=False, annotate_codegen=not merge
    )(mod)
    merged = relax.transform.MergeCompositeFunctions()(fused) if merge else fused
    return _mark_constant_params(_one_function_per_call(merged, dialect)), table, excluded


def find_candidates(mod: Any, opts: PartitionOptions) -> list[Match]:
    """Every match the codegen accepts in ``mod`` (constants folded), in the order the
    pattern table took them: the candidates of a cost decision or a calibration."""
    checker = _Checker(opts)
    _fuse(mod, opts.dialect, checker)
    return _without_overlaps(checker.accepted)


def _without_overlaps(matches: list[Match]) -> list[Match]:
    """Each binding in one candidate. The checker also accepts the smaller matches that a
    larger one then takes over (a dense alone, then dense + bias at its add): a match that
    holds a kept one replaces it; one that overlaps a kept one otherwise is dropped."""
    kept: list[Match] = []
    for match in matches:
        names = {var.name for var, _ in match.bindings}
        held = [k for k in kept if {var.name for var, _ in k.bindings} <= names]
        others = [k for k in kept if k not in held]
        if any(names & {var.name for var, _ in k.bindings} for k in others):
            continue
        if held:  # in the place of the first match it holds
            at = kept.index(held[0])
            kept = (
                [k for k in kept[:at] if k not in held]
                + [match]
                + [k for k in kept[at:] if k not in held]
            )
        else:
            kept.append(match)
    return kept


def partition(
    mod: Any, dialect: str, options: BackendOptions, *, codegen: bool = True
) -> Partitioned:
    """Partition ``mod`` for ``dialect`` (nnapi | neuron) and run its codegen. Without
    ``codegen`` the offloaded functions stay Relax functions (marked ``Codegen``): what
    :mod:`harness.measure.divergence` builds for the CPU."""

    from harness.byoc import candidates as cands

    opts = PartitionOptions.from_backend(dialect, options)
    register_codegens()
    mod = normalize(mod)
    if opts.mode == "calibrate-cpu":
        return Partitioned(*cands.calibration_module(mod, find_candidates(mod, opts), opts))
    if opts.mode == "calibrate-accel":
        cal, info = cands.calibration_module(mod, find_candidates(mod, opts), opts, accel=True)
        merged, _, _ = _fuse(cal, dialect, _Checker(opts), merge=False)
        return Partitioned(_codegen(merged, opts), info)

    decision: cands.CostDecision | None = None
    if opts.mode == "cost":
        decision = cands.decide(mod, find_candidates(mod, opts), opts, options.get("costs"))
    checker = _Checker(opts, decision.keep_on_cpu if decision else None)
    merged, table, excluded = _fuse(mod, dialect, checker)
    report = build_report(
        mod,
        merged,
        refusals=checker.refusals,
        dialect=DIALECTS[dialect].name,
        feature_level=opts.feature_level if dialect == "nnapi" else None,
        mode=opts.mode,
        table=table,
        excluded=excluded,
    )
    if decision is not None:
        decided = decision.report()
        report["predicted_ms"] = decided["predicted_ms"]
        report["cost"] = decided["cost"]
    if not codegen:
        return Partitioned(merged, report)
    lowered = _codegen(merged, opts)
    lowered = lowered.with_attr(REPORT_ATTR, json.dumps(report))
    log.info(
        "%s: %d of %d operators offloaded in %d subgraph(s)",
        dialect,
        report["ops_offloaded"],
        report["ops_total"],
        report["subgraphs"],
    )
    return Partitioned(lowered, report)


def _codegen(merged: Any, opts: PartitionOptions) -> Any:
    from tvm import relax

    codegen_options = {
        opts.dialect: {"feature_level": opts.feature_level, "preference": opts.preference}
    }
    return relax.transform.RunCodegen(codegen_options)(merged)


def _one_function_per_call(mod: Any, dialect: str) -> Any:
    """Every call of an offloaded function gets a function of its own.

    Partitioning shares one function between subgraphs of the same structure (TVM's block
    builder adds a function only once), but their weights are arguments, and the generated C
    builds its accelerator model once, with the weights of its first call: a shared function
    ran its second call site with the first's weights (MobileNetV3's repeated blocks). Each
    copy has its own symbol, ``<name>_<k>_<dialect>`` for the k-th call after the first."""
    from tvm import relax
    from tvm.relax.utils import copy_with_new_vars

    offloaded = {gv for gv, func in mod.functions.items() if func.attrs and "Codegen" in func.attrs}
    suffix = f"_{dialect}"

    @relax.expr_functor.mutator
    class Split(relax.PyExprMutator):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(mod)
            self.calls: dict[Any, int] = {}

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            gv = call.op
            if not isinstance(gv, relax.GlobalVar) or gv not in offloaded:
                return call
            k = self.calls.get(gv, 0)
            self.calls[gv] = k + 1
            if k == 0:
                return call
            base = gv.name_hint.removesuffix(suffix)
            name = f"{base}_{k}{suffix}"
            # Its own variables (each bound once in a module), and a symbol of its own, which
            # also makes the copy distinct to the builder.
            copy = copy_with_new_vars(mod[gv]).with_attr("global_symbol", name)
            new_gv = self.builder_.add_func(copy, name)
            return relax.Call(new_gv, call.args, call.attrs, call.ty_args, call.span)

    split = Split()
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function) and gv not in offloaded:
            split.builder_.update_func(gv, split.visit_expr(func))
    return split.builder_.get()


def _mark_constant_params(mod: Any) -> Any:
    """Annotate each offloaded function with the indices of its constant arguments, and the
    values of those with one element (each function has one call site: see
    :func:`_one_function_per_call`)."""
    from tvm import relax

    marks: dict[Any, list[int]] = {}
    scalars: dict[Any, dict[str, float]] = {}
    for func in mod.functions.values():
        body = getattr(func, "body", None)
        if not isinstance(func, relax.Function) or not isinstance(body, relax.SeqExpr):
            continue
        for block in body.blocks:
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
                    marks[value.op] = [i for i, a in enumerate(value.args) if is_const_tensor(a)]
                    values = {str(i): scalar_value(a) for i, a in enumerate(value.args)}
                    scalars[value.op] = {k: v for k, v in values.items() if v is not None}
    for gv, indices in marks.items():
        func = mod[gv]
        if func.attrs and "Codegen" in func.attrs:
            func = func.with_attr(CONST_PARAMS_ATTR, indices)
            mod[gv] = func.with_attr(CONST_SCALARS_ATTR, json.dumps(scalars[gv]))
    return mod


def report_of(mod: Any) -> PartitionReport | None:
    """The partition report a lowered module carries, if any."""
    if mod.attrs is None or REPORT_ATTR not in mod.attrs:
        return None
    report: PartitionReport = json.loads(str(mod.attrs[REPORT_ATTR]))
    return report
