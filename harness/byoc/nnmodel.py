"""The NNAPI-family model being built (operands, operations, inputs, outputs), as plain data.

Layout: the APIs' convolutions and pools are NHWC; Relax graphs from ONNX are NCHW. Inside a
built model every 4-D tensor is held NHWC (its Relax dims permuted by ``NHWC``); the generated
C transposes 4-D inputs and outputs at the subgraph boundary, and constants (weights, biases)
are permuted once when the model is built. Other ranks keep the Relax order.

Also here: what an operator translation is (:class:`Translation`), so that each operator
family (:mod:`.translate_layers`, :mod:`.translate_elementwise`, :mod:`.translate_axes`)
and the graph walk (:mod:`.translate`) agree on it, and :class:`Refused`, how a translation
says an operator stays on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.byoc import api_rules

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
# The NNAPI feature level that brought each operation, and the operations the Neuron adapter
# lists as not available: from the APIs' rules (:mod:`.api_rules`).
OPERATION_LEVEL = {name: rule.since for name, rule in api_rules.RULES.items()}
NEURON_UNAVAILABLE = {name for name, rule in api_rules.RULES.items() if rule.neuron_level is None}
# An operand kind (see :class:`Operand`) -> its API operand type.
OPERAND_TYPES = {
    "tensor": "TENSOR_FLOAT32",
    "const": "TENSOR_FLOAT32",
    "zeros": "TENSOR_FLOAT32",
    "f32vec": "TENSOR_FLOAT32",
    "i32vec": "TENSOR_INT32",
    "i32": "INT32",
    "f32": "FLOAT32",
    "bool": "BOOL",
}
# What kind of rule a violation breaks -> the reason its operator stays on the CPU.
VIOLATION_REASONS: dict[str, Reason] = {
    "level": "unsupported operator",
    "count": "unsupported operator",
    "type": "dtype",
    "rank": "shape constraint",
    "constant": "shape constraint",
}


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
# Values and operands
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """A float32 tensor of the NN model: operand index and its Relax shape."""

    operand: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Const:
    """A constant argument of the subgraph (weights): its data arrives with the first call.
    ``scalar``: its value, for a constant of one element known when partitioning (the 3 and 6
    of a hard-swish)."""

    param: int
    shape: tuple[int, ...]
    scalar: float | None = None


Value = Tensor | Const


def require_tensor(value: Value, what: str) -> Tensor:
    """``value`` if it is a computed tensor; Refused for a constant."""
    if not isinstance(value, Tensor):
        raise Refused("shape constraint", f"{what} is a constant (left to constant folding)")
    return value


@dataclass
class Operand:
    """One operand of the NN model.

    ``kind``: ``tensor`` (float32, computed or a model input/output), ``const`` (float32 from
    argument ``param``, reshaped to ``src_shape`` and permuted by ``perm``), ``zeros``,
    ``f32vec`` (a TENSOR_FLOAT32 whose values are in the model: clip bounds), ``i32`` / ``f32``
    / ``bool`` scalars and ``i32vec`` (TENSOR_INT32) immediates.
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


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------


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

    def f32vec(self, values: Sequence[float], dims: Sequence[int]) -> int:
        """A float32 tensor of ``dims`` holding ``values`` (row-major), written into the model."""
        dims = tuple(int(d) for d in dims)
        values = tuple(float(v) for v in values)
        count = 1
        for d in dims:
            count *= d
        if count != len(values):
            raise ValueError(f"{len(values)} values for a tensor of dims {dims}")
        return self.add(Operand("f32vec", dims, value=values))

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
        """Add operation ``code``; Refused (the operator stays on the CPU, with the rule as its
        reason) when the target API does not take it in this form (:mod:`.api_rules`)."""
        self.require(code)
        violation = self.violation(code, inputs, outputs)
        if violation is not None:
            raise Refused(VIOLATION_REASONS[violation.kind], violation.message)
        self.operations.append(Operation(code, list(inputs), list(outputs)))

    def operand_info(self, index: int) -> api_rules.OperandInfo:
        op = self.operands[index]
        rank = 1 if op.kind == "i32vec" else len(op.dims)
        return api_rules.OperandInfo(OPERAND_TYPES[op.kind], rank, op.kind != "tensor")

    def violation(
        self, code: str, inputs: Sequence[int], outputs: Sequence[int]
    ) -> api_rules.Violation | None:
        """The API rule operation ``code`` on these operands breaks, or None."""
        return api_rules.check(
            code,
            [self.operand_info(i) for i in inputs],
            len(outputs),
            api="neuron" if self.dialect == "neuron" else "nnapi",
            level=self.feature_level,
        )

    def has(self, code: str) -> bool:
        """Whether the target's API has operation ``code``."""
        try:
            self.require(code)
        except Refused:
            return False
        return True

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
# What a translation of one operator is
# ------------------------------------------------------------------------------------------

Lookup = Callable[[Any], Value]
"""Resolves an argument expression of the call being translated to its value."""

Emit = Callable[[NNModel, Any, Lookup, tuple[int, ...], Value | None, int], Value]
"""``emit(model, call, get, out_shape, bias, act)``: add the call's operations to ``model``
(with a fused bias constant and activation code, when the walk fused them) and return the
result's value; Refused when it cannot."""


@dataclass(frozen=True)
class Translation:
    """How one Relax operator becomes NN operations, and what the walk may fuse into it."""

    emit: Emit
    takes_bias: bool = False  # a following add of a per-channel constant folds into it
    fuses_activation: bool = False  # a following relu/relu1/relu6 becomes its activation
