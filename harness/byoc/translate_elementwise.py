"""Translations of elementwise operators: binary arithmetic, unary functions, activations.

Binary operators broadcast a tensor or a constant against the result's layout; ADD, SUB, MUL
and DIV take a fused activation. A clip translates only when its bounds are relu, relu1 or
relu6. Casts stay on the CPU.
"""

from __future__ import annotations

from typing import Any

from harness.byoc.nnmodel import (
    FUSES_ACTIVATION,
    Const,
    Emit,
    Lookup,
    NNModel,
    Refused,
    Translation,
    Value,
    require_tensor,
)
from harness.byoc.relaxexpr import clip_activation, op_name

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


def binary(code: str) -> Emit:
    """The translation of a binary operator that becomes operation ``code``."""

    def emit(
        model: NNModel,
        call: Any,
        get: Lookup,
        out_shape: tuple[int, ...],
        bias: Value | None,
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

    return emit


def unary(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    name = op_name(call)
    if name == "relax.clip":
        activation = clip_activation(call)
        if activation is None:
            raise Refused("unsupported operator", "clip to bounds other than relu/relu1/relu6")
        code = {"relu": "RELU", "relu1": "RELU1", "relu6": "RELU6"}[activation]
    else:
        code = UNARY_OPS[name]
    x = require_tensor(get(call.args[0]), f"{code} input")
    out = model.new_tensor(out_shape)
    model.emit(code, [x.operand], [out.operand])
    return out


def cast(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    raise Refused("dtype", "casts are left to the CPU")


TRANSLATIONS = {
    **{
        name: Translation(binary(code), fuses_activation=code in FUSES_ACTIVATION)
        for name, code in BINARY_OPS.items()
    },
    **{name: Translation(unary) for name in UNARY_OPS},
    "relax.clip": Translation(unary),
    "relax.astype": Translation(cast),
}
