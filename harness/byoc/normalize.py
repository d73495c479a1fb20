"""The imported Relax module made ready for the pattern tables, before partitioning.

Two rewrites, both exact (the module computes the same values bit for bit):

* :func:`fold_constants`: every operator call whose tensor arguments are all constants
  (a bias ``reshape(const)``, a transposed weight, the importer's ``where(isnan(bound), ...)``
  around a Clip bound) is evaluated with numpy and replaced by its value. Relax's own
  ``FoldConstant`` legalises and compiles a TIR function per folded call (126 on a
  MobileNetV3, 5-13 s); it still runs, but only when a constant call remains that numpy does
  not evaluate here.
* :func:`raise_clips`: TVM's ONNX importer lowers ``Clip`` to ``call_tir`` of TIR
  ``maximum`` / ``minimum`` functions (its bounds may be inputs), which no pattern table can
  match. A ``call_tir`` whose TIR function computes ``out[i] = max(x[i], s)`` (or ``min``) with
  a constant scalar ``s`` becomes ``relax.maximum`` / ``relax.minimum``; a ``minimum`` of a
  ``maximum`` that nothing else uses becomes one ``relax.clip``, a lone ``maximum`` with 0
  ``relax.nn.relu``. The TIR functions left unused are dropped.

Recognising a TIR function by what it computes (its one store), not by its name, keeps this
to the importer's actual output: anything else stays a ``call_tir``, on the CPU.

Then :func:`spell_for_tables` writes a few operators the APIs lack in operators they have,
computing the same float operations on the same values (bit for bit, except that a conv1d
made a conv2d may sum in another order on the CPU):

* ``squeeze`` and ``expand_dims`` -> ``reshape`` (PP-OCRv4's attention blocks squeeze q, k
  and v);
* ``conv1d`` -> ``reshape``, ``conv2d`` of height 1, ``reshape`` (openWakeWord's STFT);
* ``leakyrelu(x, a)`` with ``0 <= a <= 1`` -> ``maximum(x, x * a)`` (openWakeWord's embedding
  model: 19; NNAPI's PRELU wants an alpha tensor, and the driver has MAXIMUM and MUL);
* ONNX ``Max`` / ``Min`` of n inputs, which the importer writes as ``max(stack(broadcast_to(a),
  broadcast_to(b)), axis=0)``, -> ``maximum(a, b)`` (``minimum``) when the broadcast result is
  the same shape;
* a ``matmul`` of two 4-D tensors of the same leading dims (attention's batched ``q @ k^T``)
  -> ``reshape`` to 3-D, the 3-D ``matmul`` (BATCH_MATMUL), ``reshape`` back, and an N-D
  ``matmul`` by a matrix -> a 2-D one between reshapes (FULLY_CONNECTED for weights): inside
  an offloaded subgraph 4-D tensors are NHWC, where a 4-D matmul is not one;
* a ``reshape`` of a ``reshape`` -> one ``reshape`` (none when it gives back the shape), and
  a ``permute_dims`` or ``strided_slice`` of rank above 4 whose extra axes have size 1 -> the
  same on the tensor without them, reshaped back: attention's q/k/v split (PP-OCRv4: [1, N, 3,
  heads, d] transposed to [3, 1, heads, N, d] and sliced) at rank 4, which both APIs take,
  its 5-D reshapes left unused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.byoc.relaxexpr import is_const_tensor, op_name

log = logging.getLogger(__name__)


def normalize(mod: Any) -> Any:
    """``mod`` with its constants folded and the importer's clips raised back to Relax."""
    from tvm import relax

    mod = fold_constants(mod)
    mod = raise_clips(mod)
    mod = spell_for_tables(mod)
    # No aliases (``gv = lv``) left for an offloaded function to hold, nothing unused.
    mod = relax.transform.CanonicalizeBindings()(mod)
    return relax.transform.DeadCodeElimination()(mod)


# ------------------------------------------------------------------------------------------
# Constant folding
# ------------------------------------------------------------------------------------------

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
}


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _static_shape(expr: Any) -> tuple[int, ...] | None:
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


def _evaluate(call: Any, args: list[np.ndarray]) -> np.ndarray | None:
    """``call`` on constant ``args`` (tensor arguments only), or None when not done here."""
    name = op_name(call)
    if name in _BINARY and len(args) == 2:
        # Both operands share the result's dtype (Relax's binary operators do not promote).
        with np.errstate(all="ignore"):
            return np.asarray(_BINARY[name](args[0], args[1]))
    if name == "relax.negative" and len(args) == 1:
        return np.asarray(np.negative(args[0]))
    if name == "relax.isnan" and len(args) == 1:
        return np.asarray(np.isnan(args[0]))
    if name == "relax.where" and len(args) == 3:
        return np.where(args[0], args[1], args[2])
    if name == "relax.reshape" and len(args) == 1:
        shape = _static_shape(call)
        return None if shape is None else args[0].reshape(shape)
    if name == "relax.permute_dims" and len(args) == 1:
        axes = call.attrs.axes
        return np.transpose(args[0], None if axes is None else _ints(axes))
    if name == "relax.astype" and len(args) == 1:
        return args[0].astype(str(call.attrs.dtype))
    return None


def _tensor_args(call: Any) -> list[Any] | None:
    """The tensor arguments of an operator call, or None when any is not a constant
    (shapes and scalars, which are attributes here, are left out)."""
    from tvm import relax

    out = []
    for arg in call.args:
        if isinstance(arg, relax.ShapeExpr) or type(arg).__name__ == "PrimValue":
            continue
        if not is_const_tensor(arg):
            return None
        out.append(arg)
    return out


def fold_constants(mod: Any) -> Any:
    """``mod`` with its constant operator calls evaluated (see the module doc)."""
    from tvm import relax

    consts: dict[Any, Any] = {}
    left: list[str] = []

    @relax.expr_functor.mutator
    class Fold(relax.PyExprMutator):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(mod)

        def visit_var_(self, var: Any) -> Any:
            return consts.get(var, var)

        def visit_dataflow_var_(self, var: Any) -> Any:
            return consts.get(var, var)

        def visit_var_binding_(self, binding: Any) -> None:
            value = self.visit_expr(binding.value)
            if isinstance(value, relax.Call) and op_name(value):
                args = _tensor_args(value)
                if args:
                    folded = self._fold(value, args)
                    if folded is not None:
                        consts[binding.var] = folded
                        value = folded
                    else:
                        left.append(op_name(value))
            # The binding stays (an output may name it); DeadCodeElimination drops it if unused.
            self.builder_.emit_normalized(relax.VarBinding(binding.var, value))

        def _fold(self, call: Any, args: list[Any]) -> Any:
            shape = _static_shape(call)
            if shape is None:
                return None
            result = _evaluate(call, [a.value.numpy() for a in args])
            if result is None:
                return None
            dtype = str(call.ty.dtype)
            result = np.asarray(result)
            if result.shape != shape or (result.dtype != np.dtype(dtype)):
                return None
            return relax.const(result, dtype)

    fold = Fold()
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            fold.builder_.update_func(gv, fold.visit_expr(func))
    folded = fold.builder_.get()
    if left:
        # Something constant numpy does not evaluate here: Relax's fold, which compiles it.
        log.debug("FoldConstant for %s", sorted(set(left)))
        folded = relax.transform.FoldConstant()(folded)
    return folded


# ------------------------------------------------------------------------------------------
# The importer's clips
# ------------------------------------------------------------------------------------------


def _tir_extreme(func: Any) -> tuple[str, float | None] | None:
    """``("max" | "min", bound)`` when ``func`` is what ``topi.maximum`` / ``topi.minimum``
    make of a tensor and a scalar: one block over every element of its output ``out``,
    storing ``max(x[i], s)`` (or min), ``x`` its first parameter, of ``out``'s shape, and ``s``
    a constant (``bound``) or its 0-d second parameter (``bound`` None). None otherwise."""
    params = list(func.params)
    if len(params) not in (2, 3):
        return None
    x, out = params[0], params[-1]
    out_shape = _dims(out)
    if out_shape is None or _dims(x) != out_shape:
        return None
    # root block -> one loop per output dim, each over all of it -> the computing block.
    root = func.body
    if type(root).__name__ != "SBlockRealize" or root.block.iter_vars:
        return None
    stmt = root.block.body
    loops = []
    while type(stmt).__name__ == "For":
        loops.append(stmt)
        stmt = stmt.body
    if type(stmt).__name__ != "SBlockRealize" or len(loops) != len(out_shape):
        return None
    if any(
        int(loop.min) != 0 or int(loop.extent) != d or int(loop.kind) != 0
        for loop, d in zip(loops, out_shape, strict=True)
    ):
        return None
    block = stmt.block
    iters = list(block.iter_vars)
    values = list(stmt.iter_values)
    if len(iters) != len(loops) or block.init is not None or list(block.alloc_buffers):
        return None
    for iv, value, loop, d in zip(iters, values, loops, out_shape, strict=True):
        # v_i = ax_i over [0, d), data parallel
        if int(iv.iter_type) != 0 or int(iv.dom.min) != 0 or int(iv.dom.extent) != d:
            return None
        if not value.same_as(loop.loop_var):
            return None
    store = block.body
    if type(store).__name__ != "BufferStore" or not store.buffer.same_as(out):
        return None
    if not _same_vars(store.indices, [iv.var for iv in iters]):
        return None
    value = store.value
    kind = {"Max": "max", "Min": "min"}.get(type(value).__name__)
    if kind is None:
        return None
    a, b = value.a, value.b
    if type(a).__name__ != "TensorLoad" or not a.source.same_as(x):
        return None
    if not _same_vars(a.indices, [iv.var for iv in iters]):
        return None
    if len(params) == 3:
        scalar = params[1]
        if type(b).__name__ != "TensorLoad" or not b.source.same_as(scalar) or _dims(scalar):
            return None
        return kind, None
    if type(b).__name__ in ("FloatImm", "IntImm"):
        return kind, float(b.value)
    return None


def _dims(param: Any) -> tuple[int, ...] | None:
    shape = getattr(getattr(param, "ty", None), "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except TypeError:
        return None


def _same_vars(exprs: Any, variables: list[Any]) -> bool:
    exprs = list(exprs)
    return len(exprs) == len(variables) and all(
        e.same_as(v) for e, v in zip(exprs, variables, strict=True)
    )


def scalar_value(expr: Any) -> float | None:
    """The value of a float constant with one element (read without copying a larger one)."""
    if not is_const_tensor(expr) or not str(expr.ty.dtype).startswith("float"):
        return None
    shape = _static_shape(expr)
    if shape is None or math.prod(shape) != 1:
        return None
    return float(expr.value.numpy().reshape(-1)[0])


def raise_clips(mod: Any) -> Any:
    """``mod`` with the importer's ``call_tir`` maximum/minimum raised (see the module doc)."""
    from tvm import relax, tirx

    extremes: dict[Any, tuple[str, float | None]] = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            found = _tir_extreme(func)
            if found is not None:
                extremes[gv] = found
    if not extremes:
        return mod

    def bound_of(call: Any) -> tuple[str, Any, float] | None:
        """(max | min, x, bound) of a call_tir of one of ``extremes``."""
        if op_name(call) != "relax.call_tir":
            return None
        gv = call.args[0]
        if gv not in extremes:
            return None
        kind, bound = extremes[gv]
        args = list(call.args[1].fields)
        if bound is None:
            if len(args) != 2:
                return None
            bound = scalar_value(args[1])
            if bound is None:
                return None
        elif len(args) != 1:
            return None
        dtype = str(call.ty.dtype)
        if dtype not in ("float32", "float16") or str(args[0].ty.dtype) != dtype:
            return None
        return kind, args[0], bound

    uses: dict[Any, int] = {}

    @relax.expr_functor.visitor
    class Count(relax.PyExprVisitor):  # type: ignore[misc]
        def visit_var_(self, var: Any) -> None:
            uses[var] = uses.get(var, 0) + 1

        def visit_dataflow_var_(self, var: Any) -> None:
            uses[var] = uses.get(var, 0) + 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            Count().visit_expr(func)

    @relax.expr_functor.mutator
    class Raise(relax.PyExprMutator):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(mod)
            self.lower: dict[Any, tuple[Any, float]] = {}  # max(x, lo) var -> (x, lo)

        def visit_var_binding_(self, binding: Any) -> None:
            value = self.visit_expr(binding.value)
            found = bound_of(value) if isinstance(value, relax.Call) else None
            if found is not None:
                kind, x, bound = found
                value = self.builder_.normalize(self._raised(binding.var, kind, x, bound))
            self.builder_.emit_normalized(relax.VarBinding(binding.var, value))

        def _raised(self, var: Any, kind: str, x: Any, bound: float) -> Any:
            if kind == "max":
                self.lower[var] = (x, bound)
                return _at_least(x, bound)
            if x in self.lower and uses.get(x, 0) == 1:
                inner, lo = self.lower[x]  # min(max(inner, lo), bound)
                if lo == -math.inf or bound == math.inf:
                    return _at_most(_at_least(inner, lo), bound)
                return relax.op.clip(inner, lo, bound)
            return _at_most(x, bound)

    def _at_least(x: Any, lo: float) -> Any:
        if lo == -math.inf:
            return x
        if lo == 0.0:
            return relax.op.nn.relu(x)
        return relax.op.maximum(x, relax.const(lo, str(x.ty.dtype)))

    def _at_most(x: Any, hi: float) -> Any:
        if hi == math.inf:
            return x
        return relax.op.minimum(x, relax.const(hi, str(x.ty.dtype)))

    raise_ = Raise()
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            raise_.builder_.update_func(gv, raise_.visit_expr(func))
    return raise_.builder_.get()


# ------------------------------------------------------------------------------------------
# Operators the APIs lack, in operators they have
# ------------------------------------------------------------------------------------------

_REDUCE_TO_BINARY = {"relax.max": "maximum", "relax.min": "minimum"}


# The rewrites that keep a tensor's rank and make elementwise operators of others: a tuned
# build's ConvertLayout needs them too (harness.compile.layout).
ELEMENTWISE_SPELLINGS = frozenset({"relax.nn.leakyrelu", *_REDUCE_TO_BINARY})


def spell_for_tables(mod: Any, only: frozenset[str] | None = None) -> Any:
    """``mod`` with squeeze, leaky ReLU, n-ary Max/Min and 4-D matmuls written in operators
    the pattern tables have (see the module doc); anything else unchanged. ``only``: rewrite
    calls of these operators alone (e.g. :data:`ELEMENTWISE_SPELLINGS`)."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Spell(relax.PyExprMutator):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(mod)
            self.bound: dict[Any, Any] = {}  # var -> its (rewritten) value

        def visit_var_binding_(self, binding: Any) -> None:
            value = self.visit_expr(binding.value)
            if isinstance(value, relax.Call) and _static_shape(value) is not None:
                spelled = self._spelled(value)
                if spelled is not None:
                    value = self.builder_.normalize(spelled)
            self.bound[binding.var] = value
            self.builder_.emit_normalized(relax.VarBinding(binding.var, value))

        def _spelled(self, call: Any) -> Any:
            name = op_name(call)
            if only is not None and name not in only:
                return None
            if name in ("relax.squeeze", "relax.expand_dims"):
                reshape = self.builder_.normalize(
                    relax.op.reshape(call.args[0], _static_shape(call))
                )
                folded = self._reshape(reshape)
                return reshape if folded is None else folded
            if name == "relax.nn.conv1d":
                return self._conv1d(call)
            if name == "relax.nn.leakyrelu":
                return _leaky_relu(call)
            if name in _REDUCE_TO_BINARY:
                return self._extreme(call, _REDUCE_TO_BINARY[name])
            if name == "relax.matmul":
                return self._matmul(call)
            if name == "relax.reshape":
                return self._reshape(call)
            if name == "relax.permute_dims":
                return self._permute_unit_axes(call)
            if name == "relax.strided_slice":
                return self._slice_unit_axes(call)
            return None

        def _reshape_source(self, expr: Any) -> Any:
            """What ``expr`` is a reshape of (None: it is not a reshape)."""
            value: Any = self.bound.get(expr)
            return value.args[0] if _is_call(value, "relax.reshape") else None

        def _reshape(self, call: Any) -> Any:
            # reshape(reshape(y)) is one reshape of y; y itself when the shapes agree
            source = self._reshape_source(call.args[0])
            if source is None or _static_shape(source) is None:
                return None
            shape = _static_shape(call)
            return source if _static_shape(source) == shape else relax.op.reshape(source, shape)

        def _permute_unit_axes(self, call: Any) -> Any:
            # A transpose of rank above 4 (both APIs stop at 4) whose extra axes have size 1
            # (attention's q/k/v split: [1, N, 3, heads, d] -> [3, 1, heads, N, d]): the same
            # transpose of the tensor without them, reshaped back.
            x = call.args[0]
            shape, out = _static_shape(x), _static_shape(call)
            if shape is None or out is None or len(shape) <= MAX_RANK:
                return None
            kept = [axis for axis, size in enumerate(shape) if size != 1]
            if len(kept) > MAX_RANK:
                return None
            axes = _ints(call.attrs.axes) if call.attrs.axes is not None else None
            if axes is None:
                axes = tuple(reversed(range(len(shape))))
            position = {axis: i for i, axis in enumerate(kept)}
            base = self._reshape_source(x)  # [1, N, 3, heads, d] is itself a reshape
            if base is None or _static_shape(base) is None:
                base = x
            squeezed_shape = tuple(shape[axis] for axis in kept)
            squeezed = base
            if _static_shape(base) != squeezed_shape:
                squeezed = self.builder_.emit(relax.op.reshape(base, squeezed_shape))
            moved = self.builder_.emit(
                relax.op.permute_dims(squeezed, [position[a] for a in axes if a in position])
            )
            return relax.op.reshape(moved, out)

        def _slice_unit_axes(self, call: Any) -> Any:
            # A slice of rank above 4 of a tensor that is a lower-rank one with unit axes
            # inserted (what _permute_unit_axes gives): the slice of that tensor, reshaped.
            source = self._reshape_source(call.args[0])
            shape, out = _static_shape(call.args[0]), _static_shape(call)
            if source is None or shape is None or out is None or len(shape) <= MAX_RANK:
                return None
            inner = _static_shape(source)
            kept = [axis for axis, size in enumerate(shape) if size != 1]
            if inner is None or tuple(shape[a] for a in kept) != inner:
                return None
            position = {axis: i for i, axis in enumerate(kept)}
            axes = [int(v.value) % len(shape) for v in call.args[1].fields]
            if any(axis not in position for axis in axes):
                return None
            begin, end, strides = (call.args[i] for i in (2, 3, 4))
            sliced = self.builder_.emit(
                relax.op.strided_slice(
                    source,
                    [position[axis] for axis in axes],
                    [int(v.value) for v in begin.fields],
                    [int(v.value) for v in end.fields],
                    [int(v.value) for v in strides.fields],
                    assume_inbound=bool(call.attrs.assume_inbound),
                )
            )
            return relax.op.reshape(sliced, out)

        def _extreme(self, call: Any, binary: str) -> Any:
            # max(stack(broadcast_to(a, S), broadcast_to(b, S), ...), axis=[0]) of shape S
            if _ints(call.attrs.axis or ()) != (0,) or bool(call.attrs.keepdims):
                return None
            stacked: Any = self.bound.get(call.args[0])
            if not _is_call(stacked, "relax.stack") or int(stacked.attrs.axis) != 0:
                return None
            shape = _static_shape(call)
            operands = []
            for field in _fields(stacked.args[0], self.bound):
                source: Any = self.bound.get(field)
                if _is_call(source, "relax.broadcast_to"):
                    field = source.args[0]
                operands.append(field)
            if len(operands) < 2:
                return None
            out = operands[0]
            for operand in operands[1:]:
                out = self.builder_.normalize(getattr(relax.op, binary)(out, operand))
            return out if _static_shape(out) == shape else None

        def _matmul(self, call: Any) -> Any:
            a, b = call.args
            sa, sb, so = _static_shape(a), _static_shape(b), _static_shape(call)
            if sa is None or sb is None or so is None or str(call.ty.dtype) != str(a.ty.dtype):
                return None
            if len(sa) > 2 and len(sb) == 2:
                # [..., M, K] @ [K, N]: one [M', K] @ [K, N] (FULLY_CONNECTED when b is constant)
                a2 = self.builder_.emit(relax.op.reshape(a, (math.prod(sa[:-1]), sa[-1])))
                product = self.builder_.emit(relax.op.matmul(a2, b, call.attrs.out_dtype))
                return relax.op.reshape(product, so)
            if len(sa) != 4 or len(sb) != 4:
                return None
            if sa[:2] != sb[:2] or so[:2] != sa[:2]:
                return None
            batch = sa[0] * sa[1]
            a3 = self.builder_.emit(relax.op.reshape(a, (batch, *sa[2:])))
            b3 = self.builder_.emit(relax.op.reshape(b, (batch, *sb[2:])))
            product = self.builder_.emit(relax.op.matmul(a3, b3, call.attrs.out_dtype))
            return relax.op.reshape(product, so)

        def _conv1d(self, call: Any) -> Any:
            # NCW/OIW -> NCHW/OIHW with H = 1: the same sums
            attrs = call.attrs
            x, w = call.args
            sx, sw = _static_shape(x), _static_shape(w)
            layouts = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout or "NCW")
            if sx is None or sw is None or layouts != ("NCW", "OIW", "NCW"):
                return None
            if not is_const_tensor(w):
                return None
            weight = relax.const(w.value.numpy().reshape(sw[0], sw[1], 1, sw[2]))
            left, right = _ints(attrs.padding)
            x4 = self.builder_.emit(relax.op.reshape(x, (sx[0], sx[1], 1, sx[2])))
            conv = relax.op.nn.conv2d(
                x4,
                weight,
                strides=(1, *_ints(attrs.strides)),
                padding=(0, left, 0, right),
                dilation=(1, *_ints(attrs.dilation)),
                groups=int(attrs.groups),
                out_dtype=str(call.ty.dtype),
            )
            return relax.op.reshape(self.builder_.emit(conv), _static_shape(call))

    spell = Spell()
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            spell.builder_.update_func(gv, spell.visit_expr(func))
    return spell.builder_.get()


# The highest rank NNAPI and the Neuron Adapter take for the operations rewritten down to it.
MAX_RANK = 4


def _is_call(expr: Any, name: str) -> bool:
    from tvm import relax

    return isinstance(expr, relax.Call) and op_name(expr) == name


def _fields(expr: Any, bound: dict[Any, Any]) -> list[Any]:
    from tvm import relax

    if isinstance(expr, relax.Var) and expr in bound:
        expr = bound[expr]
    return list(expr.fields) if isinstance(expr, relax.Tuple) else []


def _leaky_relu(call: Any) -> Any:
    from tvm import relax

    alpha = float(call.attrs.alpha)
    dtype = str(call.ty.dtype)
    if not 0.0 <= alpha <= 1.0 or not dtype.startswith("float"):
        return None
    x = call.args[0]
    return relax.op.maximum(x, relax.op.multiply(x, relax.const(alpha, dtype)))
