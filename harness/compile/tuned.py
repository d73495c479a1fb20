"""Applying MetaSchedule records to a build (the TVM side; :mod:`harness.tuning` finds and
stores the records).

Tuning and building must see the same TIR: both start with :func:`tuning_prefix` (TVM's
``static_shape_tuning_pipeline`` with ``cpu_weight_prepack``, without its tuning step), so a
workload tuned once is found by its structural hash at every later build.

Weights are prepacked: the prefix marks each TIR function's constant parameters (the weights)
layout-free, so a schedule may keep a weight in a layout of its own (MetaSchedule's
``RewriteLayout``: a convolution's kernel blocked for the vector width, as onnxruntime packs
its weights); the build folds that re-layout into the constant once, at compile time
(:func:`apply_records`). Measured side by side on ds-cnn (a search of 32 trials per task with
the mark and one without, built and timed in interleaved rounds): 0.249 ms and 0.362 ms.

Convolutions are channels-last (:mod:`harness.compile.layout`): mobilenet-v1-0.25 tuned to 32
trials per task went from 1.50x of onnxruntime's time to 0.80x (bench/tuning.py, 2 threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.compile.records import TuningProvenance


@dataclass(frozen=True)
class AppliedRecords:
    """Records a build applies: a MetaSchedule database in ``work_dir``, named by ``digest``
    in the artifact key, described by ``provenance`` in the manifest and the result."""

    digest: str
    work_dir: Path
    provenance: TuningProvenance


def cpu_tensor_intrinsics() -> None:
    """Register the CPU tensor intrinsics (x86, arm_cpu) that MetaSchedule's CPU rules use,
    without the GPU ones. ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose package
    imports every family; its CUDA and ROCm modules parse thousands of TVMScript functions
    (measured here: 31 s and 5 s of a 44 s import, under load). The package is entered into
    ``sys.modules`` with only the CPU families; a later import of a GPU family still works."""
    import importlib
    import importlib.util
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return  # a TVM without the package: nothing to register
    package = types.ModuleType(name, "CPU tensor intrinsics (edgefarm: GPU families skipped)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__package__ = name
    sys.modules[name] = package
    for family in ("x86", "arm_cpu"):
        importlib.import_module(f"{name}.{family}")


# What tuning_prefix makes of a model, versioned: a workload's hash depends on it, so hashes
# found by another version (cached: harness.compile.build.model_workloads) are not these.
# 2: weights marked layout-free. 3: 2-D convolutions channels-last (harness.compile.layout).
# 4: channels-last only where each stretch of it has two convolutions (a BYOC CPU part).
# 5: ONNX's Max/Min of several tensors and LeakyReLU in forms ConvertLayout moves.
TUNING_PREFIX_VERSION = 5
LAYOUT_FREE = "layout_free_buffers"  # the TIR attribute MetaSchedule's RewriteLayout reads
PREPACKED = "_prepacked"  # SplitLayoutRewritePreproc's suffix for a function it split


def tuning_prefix(mod: Any, target: Any) -> Any:
    """The Relax module lowered to fused TIR functions, as MetaSchedule tunes them: 2-D
    convolutions channels-last (:func:`harness.compile.layout.channels_last`), weights marked
    layout-free (:func:`mark_layout_free_weights`)."""
    import tvm
    from tvm import relax

    from harness.compile.layout import channels_last

    with target:
        decomposed = tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
            ]
        )(mod)
        lowered = relax.pipeline.zero_pipeline()(channels_last(decomposed))
    return mark_layout_free_weights(lowered)


def mark_layout_free_weights(mod: Any) -> Any:
    """``mod`` with each TIR function's ``layout_free_buffers`` attribute set to the parameters
    that are constants (weights) at every ``call_tir`` of it: a schedule may change their
    layout, since the build can re-lay out a constant once. Relax's
    ``AttachAttrLayoutFreeBuffers`` marks the same buffers, but re-adds every function under a
    new name (``fused_conv2d_add_relu1``, ``reshape11``), and task names are what users see
    (tests/harness/tuning/test_model_records.py checks that the two mark alike)."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    constant_at: dict[Any, set[int]] = {}

    def visit(expr: Any) -> None:
        if not (isinstance(expr, relax.Call) and expr.op.same_as(call_tir)):
            return
        callee, args = expr.args[0], expr.args[1]
        fields = args.fields if isinstance(args, relax.Tuple) else [args]
        constants = {i for i, arg in enumerate(fields) if isinstance(arg, tvm.ir.GenericConst)}
        # A buffer is layout-free only if every call passes a constant there.
        constant_at[callee] = constant_at.get(callee, constants) & constants

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    marked = mod.clone()
    for gv, func in mod.functions.items():
        indices = sorted(constant_at.get(gv, set()))
        if isinstance(func, tvm.tirx.PrimFunc) and indices:
            marked.update_func(gv, func.with_attr(LAYOUT_FREE, indices))
    return marked


def workload_hashes(mod: Any, target: Any) -> list[str]:
    """The structural hashes of ``mod``'s TIR functions after :func:`tuning_prefix`, as
    MetaSchedule matches records to them (its workload files' first field): the workloads a
    build of ``mod`` for ``target`` can apply records of. ``mod`` is the module as the build
    lowers it (an offloading build's: partitioned, so these are its CPU part's functions).

    Each function is wrapped as MetaSchedule wraps a task's function before hashing it
    (``meta_schedule.tune_context._normalize_mod``: ``global_symbol`` kept or set to ``main``,
    ``tirx.noalias``, the sole function ``main`` of a module), without importing
    MetaSchedule and its tensor intrinsics (7 s here); tests/harness/tuning/
    test_model_records.py checks that the hashes are those of MetaSchedule's own tasks."""
    import tvm
    from tvm_ffi import structural_hash

    hashes: set[str] = set()
    for func in tuning_prefix(mod, target).functions.values():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if func.attrs is None or "global_symbol" not in func.attrs:
            func = func.with_attr("global_symbol", "main")
        func = func.with_attr("tirx.noalias", True)
        # MetaSchedule writes a workload's hash as the unsigned decimal of the same hash.
        hashes.add(str(int(structural_hash(tvm.IRModule({"main": func})))))
    return sorted(hashes)


def apply_records(mod: Any, target: Any, work_dir: Path) -> Any:
    """``mod`` with every TIR function that has a record in ``work_dir`` scheduled by its best
    record (the others stay as TVM's default pipeline makes them)."""
    import tvm
    from tvm import relax

    cpu_tensor_intrinsics()  # a record's trace may use them
    lowered = tuning_prefix(mod, target)
    with target:
        return tvm.transform.Sequential(
            [
                relax.transform.MetaScheduleApplyDatabase(str(work_dir)),
                # A record that re-laid out a weight begins with that re-layout: it is split
                # off (f_weight_prepack, f_prepacked), run on the constant weight now, and the
                # split-off function dropped.
                relax.transform.SplitLayoutRewritePreproc(),
                relax.transform.FoldConstant(),
                relax.transform.DeadCodeElimination(),
            ]
        )(lowered)


def scheduled_functions(mod: Any) -> set[str]:
    """The TIR functions of ``mod`` that a tuning record scheduled (MetaSchedule marks each
    function it applies a record to with ``tirx.is_scheduled``), by their workloads' names
    (``f``, not the ``f_prepacked`` of a function whose weights were re-laid out)."""
    import tvm

    return {
        gv.name_hint.removesuffix(PREPACKED)
        for gv, func in mod.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc)
        and func.attrs is not None
        and bool(func.attrs.get("tirx.is_scheduled", False))
    }
