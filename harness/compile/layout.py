"""Channels-last convolutions for tuned builds: Relax's ``ConvertLayout`` to NHWC.

Models arrive NCHW (ONNX's layout). A tuned NCHW convolution on a CPU vectorizes along W, the
innermost axis: 6 floats wide in mobilenet-v1-0.25's last blocks (6x6 maps of 128 channels),
where a 16-float AVX-512 or 4-float NEON register wants more. onnxruntime re-lays the graph
out into channel blocks (NCHWc) for the same reason. With NHWC the innermost axis is the
channels (8-256 here): a 1x1 convolution is a matrix product whose output rows are
contiguous, and a depthwise one vectorizes across its channels.

``ConvertLayout`` moves every operator it knows a layout rule for; around one it does not, it
puts transposes back to NCHW and out again. ONNX's Clip (ReLU6) is imported as TE's
``maximum`` and ``minimum`` called with ``call_tir``, which it cannot see into: left so, each
ReLU6 would cost two transposes and could no longer fuse into its convolution.
:func:`clamps_as_relax_ops` first turns such calls back into Relax's ``maximum``/``minimum``
(checked to be exactly TE's functions for those shapes, so nothing else is rewritten).
ONNX's Max and Min of several tensors (openWakeWord's embedding model takes the Max of two
branches nineteen times) are imported as each input broadcast to a common shape, the copies
stacked on a new axis and reduced over it: a 5-D tensor whose layout ``ConvertLayout`` cannot
infer (TVM 0.27 fails with ``Invalid SLayout``), and LeakyReLU has no layout rule at all.
The BYOC normalisation's spellings of both are applied first
(:data:`harness.byoc.normalize.ELEMENTWISE_SPELLINGS`: pairwise ``maximum``/``minimum``,
``maximum(x, x * slope)``, exact); they move like any elementwise operator and fuse with
their neighbours. Should ``ConvertLayout`` still fail on an operator, the module stays NCHW:
the layout is a speed-up, never a reason for a tuning or a build to fail.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.errors import one_line

log = logging.getLogger(__name__)

# Relax's conv2d as NHWC data with OHWI kernels (topi's NHWC convolutions, grouped ones too).
CHANNELS_LAST = {"relax.nn.conv2d": ["NHWC", "OHWI"]}


# Fewer 2-D convolutions than this for each stretch of channels-last and the module stays
# NCHW: a stretch costs a transpose in and one out, each as large as a convolution's input or
# output, which a lone convolution's gain need not repay (a guess, not a measurement;
# mobilenet-v1-0.25 is one stretch of 27). A BYOC backend's CPU part can hold convolutions
# each between two offloaded subgraphs (NCHW, as the accelerator takes them): one stretch each.
MIN_CONVOLUTIONS = 2


def channels_last(mod: Any) -> Any:
    """``mod`` with its 2-D convolutions NHWC, if it has at least :data:`MIN_CONVOLUTIONS`
    for every two transposes of data the layout adds (the transposes that remain: at the
    model's edges, around operators without a layout rule, and around offloaded subgraphs);
    else ``mod`` as it is."""
    from tvm import relax

    convolutions = count_convolutions(mod)
    if convolutions < MIN_CONVOLUTIONS:
        return mod
    from harness.byoc.normalize import ELEMENTWISE_SPELLINGS, spell_for_tables

    spelled = spell_for_tables(clamps_as_relax_ops(mod), only=ELEMENTWISE_SPELLINGS)
    elementwise = relax.transform.DeadCodeElimination()(spelled)
    try:
        converted = relax.transform.ConvertLayout(CHANNELS_LAST)(elementwise)
    # TVM's layout inference failing on an operator it mishandles (its FFI raises a failed
    # C++ check as InternalError, a RuntimeError, or as ValueError/TypeError)
    except (RuntimeError, ValueError, TypeError) as err:
        log.warning("convolutions stay NCHW: TVM's ConvertLayout failed (%s)", one_line(str(err)))
        return mod
    stretches = (count_data_transposes(converted) - count_data_transposes(mod)) / 2
    if convolutions < MIN_CONVOLUTIONS * stretches:
        return mod
    return converted


def count_convolutions(mod: Any) -> int:
    """How many calls of Relax's ``nn.conv2d`` the module's Relax functions make."""
    import tvm
    from tvm import relax

    conv2d = tvm.ir.Op.get("relax.nn.conv2d")
    count = 0

    def visit(expr: Any) -> None:
        nonlocal count
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            count += expr.op.same_as(conv2d)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return count


def count_data_transposes(mod: Any) -> int:
    """How many ``permute_dims`` of data the module's Relax functions make: not those of
    constants, nor of what is computed from constants alone (a weight, a bias reshaped), which
    the build folds."""
    import tvm
    from tvm import relax

    permute_dims = tvm.ir.Op.get("relax.permute_dims")
    count = 0
    for func in mod.functions.values():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        constant: set[Any] = set()

        def is_constant(expr: Any, constant: set[Any] = constant) -> bool:
            if isinstance(expr, tvm.ir.Constant | relax.ShapeExpr):
                return True
            return isinstance(expr, relax.Var) and expr in constant

        for block in func.body.blocks:
            for binding in block.bindings:
                value = getattr(binding, "value", None)
                if isinstance(value, relax.Var | tvm.ir.Constant):
                    if is_constant(value):
                        constant.add(binding.var)
                    continue
                if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
                    continue
                if all(is_constant(arg) for arg in value.args):
                    constant.add(binding.var)
                elif value.op.same_as(permute_dims):
                    count += 1
    return count


def clamps_as_relax_ops(mod: Any) -> Any:
    """``mod`` with each ``call_tir`` of TE's ``maximum``/``minimum`` (a tensor and a scalar
    or a tensor of its shape) replaced by Relax's operator of the same name."""
    import tvm
    from tvm import relax, te, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator
    from tvm_ffi import structural_equal

    call_tir = tvm.ir.Op.get("relax.call_tir")
    relax_ops = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}
    te_ops = {"maximum": topi.maximum, "minimum": topi.minimum}

    def te_twin(name: str, args: list[Any]) -> Any | None:
        """The PrimFunc TE makes of ``name`` for tensors shaped as ``args``, or None."""
        holders = []
        for i, arg in enumerate(args):
            sinfo = arg.ty
            if not isinstance(sinfo, relax.TensorType) or not isinstance(
                sinfo.shape, relax.ShapeExpr
            ):
                return None
            # The shape's own (int64) dims, as the importer's emit_te made them.
            holders.append(te.placeholder(list(sinfo.shape.values), sinfo.dtype, name=f"x{i}"))
        out = te_ops[name](holders[0], holders[1])
        return te.create_prim_func([*holders, out])

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(call_tir)):
                return call
            callee, args = call.args[0], call.args[1]
            if not isinstance(callee, tvm.ir.GlobalVar) or not isinstance(args, relax.Tuple):
                return call
            name = callee.name_hint.rstrip("0123456789")
            if name not in relax_ops or len(args.fields) != 2:
                return call
            fields = list(args.fields)
            try:
                twin = te_twin(name, fields)
            except (tvm.error.InternalError, ValueError, TypeError):
                return call
            func = mod[callee]
            if twin is None or not structural_equal(
                func.without_attr("global_symbol"), twin.without_attr("global_symbol")
            ):
                return call
            return relax_ops[name](fields[0], fields[1])

    rewritten = mod.clone()
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewritten[gv] = Rewrite(mod).visit_expr(func)
    return relax.transform.DeadCodeElimination()(rewritten)
