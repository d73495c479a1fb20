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
infer (TVM 0.27 fails with ``Invalid SLayout``). :func:`stacked_extrema_as_pairwise` writes
them as Relax's ``maximum``/``minimum``, which it moves like any elementwise operator and
which fuse with their neighbours. Should ``ConvertLayout`` still fail on an operator, the module
stays NCHW: the layout is a speed-up, never a reason for a tuning or a build to fail.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

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
    import tvm

    elementwise = leaky_relus_as_maximum(stacked_extrema_as_pairwise(clamps_as_relax_ops(mod)))
    try:
        converted = relax.transform.ConvertLayout(CHANNELS_LAST)(elementwise)
    except tvm.error.TVMError as err:  # TVM's layout inference, on an operator it mishandles
        log.warning("convolutions stay NCHW: TVM's ConvertLayout failed (%s)", _first_line(err))
        return mod
    stretches = (count_data_transposes(converted) - count_data_transposes(mod)) / 2
    if convolutions < MIN_CONVOLUTIONS * stretches:
        return mod
    return converted


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


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


def stacked_extrema_as_pairwise(mod: Any) -> Any:
    """``mod`` with each ``max``/``min`` over axis 0 of a ``stack`` on axis 0 (ONNX's Max/Min of
    several tensors as TVM's importer writes it, every input first broadcast to the common
    shape) replaced by Relax's ``maximum``/``minimum`` of the inputs, folded pairwise: the
    same values (elementwise, exactly), the same shape (checked; else the call is left)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator
    from tvm_ffi import structural_equal

    pairwise = {"relax.max": relax.op.maximum, "relax.min": relax.op.minimum}

    def is_op(expr: Any, name: str) -> bool:
        return (
            isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name
        )

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def bound(self, expr: Any) -> Any:
            """What a dataflow variable is bound to (``expr`` itself if not a variable)."""
            if isinstance(expr, relax.Var):
                value = self.lookup_binding(expr)
                return expr if value is None else value
            return expr

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name not in pairwise:
                return call
            axis = call.attrs.axis
            if call.attrs.keepdims or axis is None or [int(a) for a in axis] != [0]:
                return call
            stacked = self.bound(call.args[0])
            if not is_op(stacked, "relax.stack") or int(stacked.attrs.axis) != 0:
                return call
            fields = self.bound(stacked.args[0])
            if not isinstance(fields, relax.Tuple) or len(fields.fields) < 2:
                return call
            inputs = []
            for field in fields.fields:
                value = self.bound(field)
                inputs.append(value.args[0] if is_op(value, "relax.broadcast_to") else field)
            op = pairwise[call.op.name]
            folded = functools.reduce(
                lambda a, b: self.builder_.normalize(op(a, b)), inputs[1:], inputs[0]
            )
            wanted = self.builder_.normalize(call).ty
            if not structural_equal(folded.ty, wanted):
                return call
            return folded

    rewritten = mod.clone()
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewritten[gv] = Rewrite(mod).visit_expr(func)
    return relax.transform.DeadCodeElimination()(rewritten)


def leaky_relus_as_maximum(mod: Any) -> Any:
    """``mod`` with each ``nn.leakyrelu`` whose slope is in [0, 1] written as
    ``maximum(x, x * alpha)``: the same values (for such a slope the larger of the two is what
    TOPI's ``x > 0 ? x : x * alpha`` picks), and operators ``ConvertLayout`` has a rule for,
    where TVM 0.27 has none for ``leakyrelu`` (each would send its convolution's output back
    to NCHW and out again)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.leakyrelu":
                return call
            alpha = float(call.attrs.alpha)
            x = call.args[0]
            dtype = getattr(x.ty, "dtype", None)
            if not 0.0 <= alpha <= 1.0 or dtype not in ("float32", "float16"):
                return call
            scaled = self.builder_.normalize(relax.op.multiply(x, relax.const(alpha, dtype)))
            return relax.op.maximum(x, scaled)

    rewritten = mod.clone()
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewritten[gv] = Rewrite(mod).visit_expr(func)
    return rewritten
