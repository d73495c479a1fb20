"""Relax operators -> an NNAPI-family model (operands and operations), as plain Python data.

One translator serves both dialects and both uses: the partitioner runs it on each candidate
match to decide whether the codegen can emit it (a :class:`Refused` names the reason, and the
operator stays on the CPU), and the codegen runs it on each offloaded subgraph to build the
model that :mod:`harness.byoc.codegen` writes out as C.

Layout: the APIs' convolutions and pools are NHWC; Relax graphs from ONNX are NCHW. Inside a
built model every 4-D tensor is held NHWC (its Relax dims permuted by ``NHWC``); the generated
C transposes 4-D inputs and outputs at the subgraph boundary, and constants (weights, biases)
are permuted once when the model is built. Other ranks keep the Relax order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Reason = Literal["unsupported operator", "dtype", "shape constraint", "cost decision"]
REASONS: tuple[Reason, ...] = ("unsupported operator", "dtype", "shape constraint", "cost decision")

NHWC = (0, 2, 3, 1)  # NN dim i is Relax (NCHW) dim NHWC[i]
NCHW_FROM_NHWC = (0, 3, 1, 2)

ACTIVATION_CODES = {"relu": 1, "relu1": 2, "relu6": 3}
# Operations that take a fused activation operand.
FUSES_ACTIVATION = {
    "ADD",
    "SUB",
    "MUL",
    "DIV",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "GROUPED_CONV_2D",
    "FULLY_CONNECTED",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
}
BINARY_OPS = {
    "relax.add": "ADD",
    "relax.subtract": "SUB",
    "relax.multiply": "MUL",
    "relax.divide": "DIV",
    "relax.maximum": "MAXIMUM",
    "relax.minimum": "MINIMUM",
    "relax.power": "POW",
}
UNARY_OPS = {
    "relax.nn.relu": "RELU",
    "relax.sigmoid": "LOGISTIC",
    "relax.tanh": "TANH",
    "relax.floor": "FLOOR",
    "relax.abs": "ABS",
    "relax.exp": "EXP",
    "relax.log": "LOG",
    "relax.negative": "NEG",
    "relax.sqrt": "SQRT",
    "relax.rsqrt": "RSQRT",
}
# The NNAPI feature level that brought each operation (NNAPI's documentation); Neuron has all.
OPERATION_LEVEL = {
    "SUB": 2,
    "DIV": 2,
    "MEAN": 2,
    "TRANSPOSE": 2,
    "GROUPED_CONV_2D": 3,
    "MAXIMUM": 3,
    "MINIMUM": 3,
    "POW": 3,
    "ABS": 3,
    "EXP": 3,
    "LOG": 3,
    "NEG": 3,
    "SQRT": 3,
    "RSQRT": 3,
    "BATCH_MATMUL": 6,
}
# Operations the Neuron adapter lists as not available.
NEURON_UNAVAILABLE = {"LOG"}


class Refused(Exception):
    """The translator cannot emit an operator; it stays on the CPU for ``reason``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail = detail
        self.call: Any = None  # the operator call that was refused, once known


def layout_of(rank: int) -> tuple[int, ...]:
    return NHWC if rank == 4 else tuple(range(rank))


def inverse(perm: Sequence[int]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def permuted(dims: Sequence[int], perm: Sequence[int]) -> tuple[int, ...]:
    return tuple(dims[p] for p in perm)


def nhwc_is_nchw(shape: Sequence[int]) -> bool:
    """True when an NCHW tensor and its NHWC form have the same bytes (C == 1 or H*W == 1)."""
    return len(shape) == 4 and (shape[1] == 1 or shape[2] * shape[3] == 1)


# ------------------------------------------------------------------------------------------
# The model being built
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """A float32 tensor of the NN model: operand index and its Relax shape."""

    operand: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Const:
    """A constant argument of the subgraph (weights): its data arrives with the first call."""

    param: int
    shape: tuple[int, ...]


Value = Tensor | Const


@dataclass
class Operand:
    """One operand of the NN model.

    ``kind``: ``tensor`` (float32, computed or a model input/output), ``const`` (float32 from
    argument ``param``, reshaped to ``src_shape`` and permuted by ``perm``), ``zeros``,
    ``i32`` / ``f32`` / ``bool`` scalars and ``i32vec`` (TENSOR_INT32) immediates.
    """

    kind: str
    dims: tuple[int, ...] = ()
    value: Any = None
    param: int = -1
    src_shape: tuple[int, ...] = ()
    perm: tuple[int, ...] = ()


@dataclass
class Operation:
    code: str  # operation name without prefix: CONV_2D
    inputs: list[int]
    outputs: list[int]


@dataclass
class ModelIO:
    """A model input or output: which operand, which subgraph argument/result, and the
    permutation between the Relax layout and the NN layout (empty when they agree)."""

    operand: int
    index: int
    shape: tuple[int, ...]  # Relax shape
    perm: tuple[int, ...]  # NN dims = permuted(Relax dims, perm)


@dataclass
class NNModel:
    dialect: str
    feature_level: int
    operands: list[Operand] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    inputs: list[ModelIO] = field(default_factory=list)
    outputs: list[ModelIO] = field(default_factory=list)
    const_params: set[int] = field(default_factory=set)
    _immediates: dict[tuple[str, Any], int] = field(default_factory=dict)

    # -- operands ---------------------------------------------------------------------------

    def add(self, operand: Operand) -> int:
        self.operands.append(operand)
        return len(self.operands) - 1

    def immediate(self, kind: str, value: Any) -> int:
        key = (kind, value)
        if key not in self._immediates:
            self._immediates[key] = self.add(Operand(kind, value=value))
        return self._immediates[key]

    def i32(self, value: int) -> int:
        return self.immediate("i32", int(value))

    def f32(self, value: float) -> int:
        return self.immediate("f32", float(value))

    def flag(self, value: bool) -> int:
        return self.immediate("bool", bool(value))

    def i32vec(self, values: Sequence[int]) -> int:
        return self.immediate("i32vec", tuple(int(v) for v in values))

    def new_tensor(self, shape: Sequence[int]) -> Tensor:
        shape = tuple(int(d) for d in shape)
        return Tensor(self.add(Operand("tensor", permuted(shape, layout_of(len(shape))))), shape)

    def raw_tensor(self, nn_dims: Sequence[int]) -> int:
        """An intermediate operand in an explicit (not layout-derived) form."""
        return self.add(Operand("tensor", tuple(int(d) for d in nn_dims)))

    def const(self, value: Const, src_shape: Sequence[int], perm: Sequence[int]) -> int:
        src = tuple(int(d) for d in src_shape)
        self.const_params.add(value.param)
        return self.add(
            Operand(
                "const",
                permuted(src, perm),
                param=value.param,
                src_shape=src,
                perm=tuple(perm),
            )
        )

    def zeros(self, dims: Sequence[int]) -> int:
        return self.add(Operand("zeros", tuple(int(d) for d in dims)))

    def operand_for(self, value: Value, rank: int) -> int:
        """``value`` as an operand in the NN layout of a rank-``rank`` result."""
        if isinstance(value, Tensor):
            if len(value.shape) != rank and (rank == 4 or len(value.shape) == 4):
                raise Refused(
                    "shape constraint",
                    f"a rank-{len(value.shape)} tensor broadcast against rank {rank} crosses "
                    "the NCHW/NHWC boundary",
                )
            return value.operand
        k = len(value.shape)
        if rank == 4 and k <= 4:
            src = (1,) * (4 - k) + value.shape
            return self.const(value, src, NHWC)
        if k > rank:
            raise Refused("shape constraint", "a constant of higher rank than the result")
        src = value.shape if k else (1,)
        return self.const(value, src, tuple(range(len(src))))

    def emit(self, code: str, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        self.require(code)
        self.operations.append(Operation(code, list(inputs), list(outputs)))

    def require(self, code: str, level: int | None = None, what: str | None = None) -> None:
        if self.dialect == "neuron":
            if code in NEURON_UNAVAILABLE:
                raise Refused("unsupported operator", f"Neuron has no {code}")
            return
        need = level if level is not None else OPERATION_LEVEL.get(code, 1)
        if self.feature_level < need:
            raise Refused(
                "unsupported operator",
                f"{what or code} needs NNAPI feature level {need}; the target has "
                f"{self.feature_level}",
            )


# ------------------------------------------------------------------------------------------
# Relax helpers
# ------------------------------------------------------------------------------------------


def op_name(call: Any) -> str:
    from tvm import ir

    return str(call.op.name) if isinstance(call.op, ir.Op) else ""


def tensor_shape(expr: Any, what: str) -> tuple[int, ...]:
    """The static shape of a float32 tensor expression; Refused otherwise."""
    from tvm import relax

    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType):
        raise Refused("shape constraint", f"{what} is not a tensor")
    if sinfo.dtype != "float32":
        raise Refused("dtype", f"{what} is {sinfo.dtype}; the codegen emits float32 only")
    if sinfo.shape is None or not isinstance(sinfo.shape, relax.ShapeExpr):
        raise Refused("shape constraint", f"{what} has an unknown shape")
    dims = []
    for d in sinfo.shape.values:
        if not hasattr(d, "value"):
            raise Refused("shape constraint", f"{what} has a dynamic dimension ({d})")
        dims.append(int(d.value))
    if len(dims) > 6:
        raise Refused("shape constraint", f"{what} has rank {len(dims)} (at most 6)")
    return tuple(dims)


def is_const_tensor(expr: Any) -> bool:
    """A constant tensor (weights) — not a scalar immediate, which is a Constant too."""
    import tvm
    from tvm import relax

    return isinstance(expr, tvm.ir.Constant) and isinstance(
        getattr(expr, "ty", None), relax.TensorType
    )


def _scalar(expr: Any) -> float:
    value = getattr(expr, "value", expr)
    value = getattr(value, "value", value)
    return float(value)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _clip_activation(call: Any) -> str | None:
    """relu / relu1 / relu6 when a clip's bounds are one of those."""
    try:
        lo = _scalar(call.args[1])
        hi = _scalar(call.args[2])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if lo == 0.0 and hi == 6.0:
        return "relu6"
    if lo == -1.0 and hi == 1.0:
        return "relu1"
    if lo == 0.0 and hi >= 3.4e38:
        return "relu"
    return None


def activation_of(call: Any) -> str | None:
    """The fused-activation name an activation call stands for, or None."""
    name = op_name(call)
    if name == "relax.nn.relu":
        return "relu"
    if name == "relax.clip":
        return _clip_activation(call)
    return None


# ------------------------------------------------------------------------------------------
# Translating bindings
# ------------------------------------------------------------------------------------------

Lookup = Callable[[Any], Value]


def translate_bindings(
    model: NNModel, bindings: Sequence[tuple[Any, Any]], lookup: Lookup, outputs: set[Any]
) -> dict[Any, Value]:
    """Emit ``bindings`` (``(var, call)`` pairs in order) into ``model``.

    ``lookup`` resolves an argument bound outside ``bindings``; ``outputs`` are the vars that
    must stay visible (used after these bindings), so they are never fused away. Returns the
    value of every bound var.
    """
    values: dict[Any, Value] = {}
    uses: dict[Any, int] = {}
    for _, call in bindings:
        for arg in flat_args(call):
            uses[arg] = uses.get(arg, 0) + 1

    def get(expr: Any) -> Value:
        if expr in values:
            return values[expr]
        return lookup(expr)

    def fusable(var: Any) -> bool:
        return uses.get(var, 0) == 1 and var not in outputs

    i = 0
    while i < len(bindings):
        var, call = bindings[i]
        name = op_name(call)
        consumed = 1
        bias: Value | None = None
        act: str | None = None
        nxt = bindings[i + 1] if i + 1 < len(bindings) else None
        takes_bias = name in ("relax.nn.conv2d", "relax.matmul")
        if takes_bias and nxt is not None and fusable(var) and op_name(nxt[1]) == "relax.add":
            other = _other_arg(nxt[1], var)
            if other is not None and _is_bias(get(other), tensor_shape(call, "result")):
                bias = get(other)
                consumed += 1
                var = nxt[0]
                nxt = bindings[i + 2] if i + 2 < len(bindings) else None
        if nxt is not None and fusable(var) and nxt[1].args[0].same_as(var):
            act = activation_of(nxt[1])
            if act is not None and _fuses(name):
                consumed += 1
                var = nxt[0]
            else:
                act = None
        try:
            result = translate_call(model, call, get, bias=bias, act=act)
        except Refused as exc:
            if exc.call is None:
                exc.call = call
            raise
        for k in range(consumed):
            values[bindings[i + k][0]] = result
        i += consumed
    return values


def flat_args(call: Any) -> list[Any]:
    """The arguments of ``call``, the fields of a tuple argument spread."""
    from tvm import relax

    out: list[Any] = []
    for arg in call.args:
        if isinstance(arg, relax.Tuple):
            out.extend(arg.fields)
        else:
            out.append(arg)
    return out


def _other_arg(add_call: Any, var: Any) -> Any:
    a, b = add_call.args
    if a.same_as(var):
        return b
    if b.same_as(var):
        return a
    return None


def _is_bias(value: Value, result_shape: tuple[int, ...]) -> bool:
    """A per-output-channel constant: [C], [1, C] (dense) or [1, C, 1, 1] / [C, 1, 1] (conv)."""
    if not isinstance(value, Const):
        return False
    channels = result_shape[1] if len(result_shape) == 4 else result_shape[-1]
    shape = value.shape
    if len(result_shape) == 4:
        return shape in ((1, channels, 1, 1), (channels, 1, 1))
    return len(result_shape) == 2 and shape in ((channels,), (1, channels))


def _fuses(name: str) -> bool:
    return name in (
        "relax.nn.conv2d",
        "relax.matmul",
        "relax.add",
        "relax.subtract",
        "relax.multiply",
        "relax.divide",
        "relax.nn.max_pool2d",
        "relax.nn.avg_pool2d",
    )


def translate_call(
    model: NNModel,
    call: Any,
    get: Lookup,
    *,
    bias: Value | None = None,
    act: str | None = None,
) -> Value:
    """Emit one operator call (with an optional fused bias and activation)."""
    name = op_name(call)
    out_shape = tensor_shape(call, "the result")
    from tvm import relax

    for k, arg in enumerate(flat_args(call)):
        # Shapes (reshape) and scalars (clip bounds) are attributes here, not tensors.
        if not isinstance(arg, relax.ShapeExpr) and not _is_prim_value(arg):
            tensor_shape(arg, f"input {k}")
    act_code = ACTIVATION_CODES[act] if act else 0
    if name == "relax.nn.conv2d":
        return _conv2d(model, call, get, out_shape, bias, act_code)
    if name in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
        return _pool2d(model, call, get, out_shape, act_code)
    if name == "relax.matmul":
        return _matmul(model, call, get, out_shape, bias, act_code)
    if name in BINARY_OPS:
        return _binary(model, BINARY_OPS[name], call, get, out_shape, act_code)
    if name in UNARY_OPS or name == "relax.clip":
        return _unary(model, call, get, out_shape)
    if name == "relax.nn.softmax":
        return _softmax(model, call, get, out_shape)
    if name == "relax.mean":
        return _mean(model, call, get, out_shape)
    if name == "relax.reshape":
        return _reshape(model, _tensor(get(call.args[0]), "reshape input"), out_shape)
    if name == "relax.permute_dims":
        return _permute(model, call, get, out_shape)
    if name == "relax.concat":
        return _concat(model, call, get, out_shape)
    if name == "relax.astype":
        raise Refused("dtype", "casts are left to the CPU")
    raise Refused("unsupported operator", f"the codegen has no translation of {name or call.op}")


def _is_prim_value(expr: Any) -> bool:
    from tvm.ir.prim.expr import FloatImm, IntImm

    return isinstance(expr, (IntImm, FloatImm)) or type(expr).__name__ == "PrimValue"


def _tensor(value: Value, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise Refused("shape constraint", f"{what} is a constant (left to constant folding)")
    return value


def _conv2d(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    attrs = call.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout or "NCHW") != (
        "NCHW",
        "OIHW",
        "NCHW",
    ):
        raise Refused(
            "shape constraint",
            f"conv2d layout {attrs.data_layout}/{attrs.kernel_layout}; expected NCHW/OIHW",
        )
    if attrs.out_dtype not in (None, "", "float32"):
        raise Refused("dtype", f"conv2d accumulates in {attrs.out_dtype}")
    x = _tensor(get(call.args[0]), "conv2d input")
    weight = get(call.args[1])
    if not isinstance(weight, Const):
        raise Refused("shape constraint", "conv2d weights are not constant")
    cout, cin_g, kh, kw = weight.shape
    cin = x.shape[1]
    groups = int(attrs.groups)
    top, left, bottom, right = _ints(attrs.padding)
    sh, sw = _ints(attrs.strides)
    dh, dw = _ints(attrs.dilation)
    dilated = (dh, dw) != (1, 1)
    window = [model.i32(v) for v in (left, right, top, bottom, sw, sh)]
    if bias is not None:
        assert isinstance(bias, Const)
        b = model.const(bias, (cout,), (0,))
    else:
        b = model.zeros((cout,))
    out = model.new_tensor(out_shape)
    if groups == 1:
        if dilated:
            model.require("CONV_2D", 3, "a dilated CONV_2D")
        w = model.const(weight, weight.shape, (0, 2, 3, 1))
        ins = [x.operand, w, b, *window, model.i32(act)]
        if dilated:
            ins += [model.flag(False), model.i32(dw), model.i32(dh)]
        model.emit("CONV_2D", ins, [out.operand])
    elif groups == cin and cin_g == 1 and cout % cin == 0:
        if dilated:
            model.require("DEPTHWISE_CONV_2D", 3, "a dilated DEPTHWISE_CONV_2D")
        w = model.const(weight, weight.shape, (1, 2, 3, 0))
        ins = [x.operand, w, b, *window, model.i32(cout // cin), model.i32(act)]
        if dilated:
            ins += [model.flag(False), model.i32(dw), model.i32(dh)]
        model.emit("DEPTHWISE_CONV_2D", ins, [out.operand])
    else:
        if dilated:
            raise Refused("shape constraint", "GROUPED_CONV_2D has no dilation")
        w = model.const(weight, weight.shape, (0, 2, 3, 1))
        ins = [x.operand, w, b, *window, model.i32(groups), model.i32(act), model.flag(False)]
        model.emit("GROUPED_CONV_2D", ins, [out.operand])
    del kh, kw
    return out


def _pool2d(model: NNModel, call: Any, get: Lookup, out_shape: tuple[int, ...], act: int) -> Value:
    attrs = call.attrs
    is_max = op_name(call) == "relax.nn.max_pool2d"
    if attrs.layout != "NCHW" or (attrs.out_layout or "NCHW") != "NCHW":
        raise Refused("shape constraint", f"pool layout {attrs.layout}; expected NCHW")
    if _ints(attrs.dilation) != (1, 1):
        raise Refused("shape constraint", "dilated pooling")
    if bool(attrs.ceil_mode):
        raise Refused("shape constraint", "ceil_mode pooling")
    top, left, bottom, right = _ints(attrs.padding)
    if not is_max and bool(attrs.count_include_pad) and any((top, left, bottom, right)):
        raise Refused(
            "shape constraint", "average pooling that counts padding (the APIs exclude it)"
        )
    x = _tensor(get(call.args[0]), "pool input")
    kh, kw = _ints(attrs.pool_size)
    sh, sw = _ints(attrs.strides)
    out = model.new_tensor(out_shape)
    ins = [x.operand] + [model.i32(v) for v in (left, right, top, bottom, sw, sh, kw, kh, act)]
    model.emit("MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D", ins, [out.operand])
    return out


def _matmul(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    if call.attrs.out_dtype not in (None, "", "float32"):
        raise Refused("dtype", f"matmul accumulates in {call.attrs.out_dtype}")
    a = _tensor(get(call.args[0]), "matmul lhs")
    b = get(call.args[1])
    out = model.new_tensor(out_shape)
    if isinstance(b, Const) and len(b.shape) == 2 and len(a.shape) == 2:
        k, n = b.shape
        weights = model.const(b, (k, n), (1, 0))  # FULLY_CONNECTED wants [units, depth]
        if bias is not None:
            assert isinstance(bias, Const)
            bias_operand = model.const(bias, (n,), (0,))
        else:
            bias_operand = model.zeros((n,))
        model.emit(
            "FULLY_CONNECTED", [a.operand, weights, bias_operand, model.i32(act)], [out.operand]
        )
        return out
    if len(a.shape) == 4 or len(out_shape) == 4:
        raise Refused("shape constraint", "a 4-D matmul (its NHWC form is not a matmul)")
    bt: Value = b
    rank = len(out_shape)
    if len(a.shape) != rank or len(b.shape) != rank or rank < 2:
        raise Refused("shape constraint", "BATCH_MATMUL needs operands of the result's rank")
    b_operand = model.operand_for(bt, rank)
    model.emit("BATCH_MATMUL", [a.operand, b_operand], [out.operand])
    if bias is not None or act:
        fused = model.new_tensor(out_shape)
        b_in = model.operand_for(bias, rank) if bias is not None else None
        if b_in is None:
            b_in = model.zeros((1,) * rank)
        model.emit("ADD", [out.operand, b_in, model.i32(act)], [fused.operand])
        return fused
    return out


def _binary(
    model: NNModel,
    code: str,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    act: int,
) -> Value:
    a, b = get(call.args[0]), get(call.args[1])
    if isinstance(a, Const) and isinstance(b, Const):
        raise Refused("shape constraint", "both operands are constants (left to folding)")
    rank = len(out_shape)
    ins = [model.operand_for(a, rank), model.operand_for(b, rank)]
    out = model.new_tensor(out_shape)
    if code in FUSES_ACTIVATION:
        ins.append(model.i32(act))
    elif act:
        raise Refused("unsupported operator", f"{code} has no fused activation")
    model.emit(code, ins, [out.operand])
    return out


def _unary(model: NNModel, call: Any, get: Lookup, out_shape: tuple[int, ...]) -> Value:
    name = op_name(call)
    if name == "relax.clip":
        act = _clip_activation(call)
        if act is None:
            raise Refused("unsupported operator", "clip to bounds other than relu/relu1/relu6")
        code = {"relu": "RELU", "relu1": "RELU1", "relu6": "RELU6"}[act]
    else:
        code = UNARY_OPS[name]
    x = _tensor(get(call.args[0]), f"{code} input")
    out = model.new_tensor(out_shape)
    model.emit(code, [x.operand], [out.operand])
    return out


def _softmax(model: NNModel, call: Any, get: Lookup, out_shape: tuple[int, ...]) -> Value:
    x = _tensor(get(call.args[0]), "softmax input")
    rank = len(x.shape)
    axis = int(call.attrs.axis)
    axis = axis + rank if axis < 0 else axis
    nn_axis = inverse(layout_of(rank))[axis]
    out = model.new_tensor(out_shape)
    if nn_axis == rank - 1 and rank in (2, 4):
        model.emit("SOFTMAX", [x.operand, model.f32(1.0)], [out.operand])
    else:
        model.require("SOFTMAX", 3, "SOFTMAX over an axis other than the last")
        model.emit("SOFTMAX", [x.operand, model.f32(1.0), model.i32(nn_axis)], [out.operand])
    return out


def _mean(model: NNModel, call: Any, get: Lookup, out_shape: tuple[int, ...]) -> Value:
    x = _tensor(get(call.args[0]), "mean input")
    rank = len(x.shape)
    axes = (
        tuple(range(rank))
        if call.attrs.axis is None
        else tuple(int(a) + rank if int(a) < 0 else int(a) for a in call.attrs.axis)
    )
    keep = bool(call.attrs.keepdims)
    layout = layout_of(rank)
    inv = inverse(layout)
    nn_axes = sorted(inv[a] for a in axes)
    if not keep:
        # The NN result keeps the surviving dims in NN order; it must be the result's layout.
        kept_nn = [layout[i] for i in range(rank) if i not in nn_axes]
        kept_relax = [d for d in range(rank) if d not in axes]
        order = tuple(kept_relax.index(d) for d in kept_nn)
        if not out_shape or order != layout_of(len(out_shape)):
            raise Refused("shape constraint", "a mean whose kept dims change order in NHWC")
    out = model.new_tensor(out_shape)
    model.emit(
        "MEAN", [x.operand, model.i32vec(nn_axes), model.i32(1 if keep else 0)], [out.operand]
    )
    return out


def _reshape(model: NNModel, x: Tensor, out_shape: tuple[int, ...]) -> Value:
    src = x.operand
    if len(x.shape) == 4 and not nhwc_is_nchw(x.shape):
        model.require("TRANSPOSE", what="a reshape of an NHWC tensor (TRANSPOSE)")
        plain = model.raw_tensor(x.shape)
        model.emit("TRANSPOSE", [src, model.i32vec(NCHW_FROM_NHWC)], [plain])
        src = plain
    if len(out_shape) == 4 and not nhwc_is_nchw(out_shape):
        model.require("TRANSPOSE", what="a reshape to an NHWC tensor (TRANSPOSE)")
        plain = model.raw_tensor(out_shape)
        model.emit("RESHAPE", [src, model.i32vec(out_shape)], [plain])
        out = model.new_tensor(out_shape)
        model.emit("TRANSPOSE", [plain, model.i32vec(NHWC)], [out.operand])
        return out
    out = model.new_tensor(out_shape)
    nn_dims = model.operands[out.operand].dims
    model.emit("RESHAPE", [src, model.i32vec(nn_dims)], [out.operand])
    return out


def _permute(model: NNModel, call: Any, get: Lookup, out_shape: tuple[int, ...]) -> Value:
    x = _tensor(get(call.args[0]), "transpose input")
    rank = len(x.shape)
    axes = call.attrs.axes
    perm = tuple(reversed(range(rank))) if axes is None else _ints(axes)
    perm = tuple(p + rank if p < 0 else p for p in perm)
    lin, lout = layout_of(rank), layout_of(rank)
    inv_in = inverse(lin)
    nn_perm = tuple(inv_in[perm[lout[k]]] for k in range(rank))
    out = model.new_tensor(out_shape)
    model.emit("TRANSPOSE", [x.operand, model.i32vec(nn_perm)], [out.operand])
    return out


def _concat(model: NNModel, call: Any, get: Lookup, out_shape: tuple[int, ...]) -> Value:
    rank = len(out_shape)
    axis = int(call.attrs.axis) if call.attrs.axis is not None else 0
    axis = axis + rank if axis < 0 else axis
    ins = []
    for field_expr in flat_args(call):
        value = get(field_expr)
        if len(value.shape) != rank:
            raise Refused("shape constraint", "concatenated tensors of different ranks")
        ins.append(model.operand_for(value, rank))
    out = model.new_tensor(out_shape)
    model.emit("CONCATENATION", [*ins, model.i32(inverse(layout_of(rank))[axis])], [out.operand])
    return out
