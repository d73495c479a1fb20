"""Translations of elementwise operators: binary arithmetic, unary functions, activations.

Binary operators broadcast a tensor or a constant against the result's layout; ADD, SUB, MUL
and DIV take a fused activation. A clip is RELU, RELU1 or RELU6 when its bounds are theirs,
else MAXIMUM and MINIMUM with its bounds as constants (NNAPI feature level 3). A hard-swish,
``x * clip(x + 3, 0, 6) / 6`` in whichever of the forms importers write (:func:`hard_swish_at`),
is one HARD_SWISH where the API has it (NNAPI feature level 4), its operators one by one where
not. Casts stay on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from harness.byoc.nnmodel import (
    FUSES_ACTIVATION,
    Const,
    Emit,
    Lookup,
    NNModel,
    Refused,
    Tensor,
    Translation,
    Value,
    require_tensor,
)
from harness.byoc.relaxexpr import clip_activation, clip_bounds, op_name

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
        if any(isinstance(v, Tensor) and not v.shape for v in (a, b)):
            # a 0-d tensor computed on the CPU: an operand of unspecified rank to the APIs
            raise Refused("shape constraint", f"{code} of a 0-d tensor (the APIs have no scalars)")
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
            return _clip(model, call, get, out_shape)
        code = {"relu": "RELU", "relu1": "RELU1", "relu6": "RELU6"}[activation]
    else:
        code = UNARY_OPS[name]
    x = require_tensor(get(call.args[0]), f"{code} input")
    out = model.new_tensor(out_shape)
    model.emit(code, [x.operand], [out.operand])
    return out


def _clip(model: NNModel, call: Any, get: Lookup, out_shape: tuple[int, ...]) -> Value:
    """A clip to other bounds: MAXIMUM with the lower, then MINIMUM with the upper (each a
    constant of the result's rank, written into the model); an infinite bound is no step."""
    bounds = clip_bounds(call)
    if bounds is None:
        raise Refused("shape constraint", "a clip whose bounds are not constants")
    lo, hi = bounds
    steps = [(code, b) for code, b in (("MAXIMUM", lo), ("MINIMUM", hi)) if not math.isinf(b)]
    if not steps:
        raise Refused("shape constraint", "a clip to (-inf, inf) (nothing to offload)")
    for code, _ in steps:
        model.require(code, what=f"a clip to [{lo:g}, {hi:g}] ({code})")
    out = require_tensor(get(call.args[0]), "clip input")
    ones = (1,) * len(out_shape)
    for code, bound in steps:
        src = out.operand
        out = model.new_tensor(out_shape)
        model.emit(code, [src, model.f32vec([bound], ones)], [out.operand])
    return out


def hard_swish_at(
    bindings: Sequence[tuple[Any, Any]], i: int, get: Lookup, fusable: Callable[[Any], bool]
) -> Any:
    """The input ``x`` when ``bindings[i:i + 4]`` compute ``x * clip(x + 3, 0, 6) / 6`` with
    nothing else using their intermediates, else None. Forms: ``(x * c) / 6`` and ``x * (c /
    6)``, operands of add/multiply in either order, ``/ 6`` or ``* (1/6)``."""
    if i + 4 > len(bindings):
        return None
    (a, add), (c, clip), (m, first), (_, second) = bindings[i : i + 4]
    if op_name(add) != "relax.add" or op_name(clip) != "relax.clip":
        return None
    bound = {var for var, _ in bindings[i:]}

    def scalar(expr: Any, value: float, rel: float = 0.0) -> bool:
        # Never looks up a var bound from here on: it has no value yet.
        if expr in bound:
            return False
        v = get(expr)
        return isinstance(v, Const) and v.scalar is not None and abs(v.scalar - value) <= rel

    def other(call: Any, test: Callable[[Any], bool]) -> Any:
        p, q = call.args
        return p if test(q) else q if test(p) else None

    def times(call: Any, p: Any, q: Any) -> bool:
        if op_name(call) != "relax.multiply":
            return False
        u, v = call.args
        return bool((u.same_as(p) and v.same_as(q)) or (u.same_as(q) and v.same_as(p)))

    def sixth(call: Any, var: Any) -> bool:
        """``var / 6`` or ``var * (1/6)`` (to float32 rounding)."""
        if op_name(call) == "relax.divide":
            return call.args[0].same_as(var) and scalar(call.args[1], 6.0)
        if op_name(call) == "relax.multiply":
            k = other(call, lambda e: e.same_as(var))
            return k is not None and scalar(k, 1.0 / 6.0, 1e-7)
        return False

    x = other(add, lambda e: scalar(e, 3.0))
    if x is None or x in bound or not clip.args[0].same_as(a):
        return None
    if clip_activation(clip) != "relu6" or not (fusable(a) and fusable(c) and fusable(m)):
        return None
    if times(first, c, x) and sixth(second, m):  # (x * c) / 6
        return x
    if sixth(first, c) and times(second, m, x):  # x * (c / 6)
        return x
    return None


def hard_swish(model: NNModel, x: Value, out_shape: tuple[int, ...]) -> Value:
    """HARD_SWISH of ``x``."""
    tensor = require_tensor(x, "hard-swish input")
    out = model.new_tensor(out_shape)
    model.emit("HARD_SWISH", [tensor.operand], [out.operand])
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
