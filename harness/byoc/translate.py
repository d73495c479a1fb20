"""Relax operators -> an NNAPI-family model (operands and operations): the graph walk.

One translator serves both dialects and both uses: the partitioner runs it on each candidate
match to decide whether the codegen can emit it (a :class:`Refused` names the reason, and the
operator stays on the CPU), and the codegen runs it on each offloaded subgraph to build the
model that :mod:`harness.byoc.codegen` writes out as C.

The walk (:func:`translate_bindings`) goes through the bindings in order, makes the four
operators of a hard-swish one HARD_SWISH where the API has it, folds a bias add and an
activation into the operator before them where that operator takes them, and hands
each call to its operator family's :class:`~harness.byoc.nnmodel.Translation`:
:mod:`.translate_layers` (conv2d, pooling, matmul), :mod:`.translate_elementwise` (binary,
unary, activations) and :mod:`.translate_axes` (softmax, mean, reshape, transpose, concat).
The model and its NHWC layout are in :mod:`.nnmodel`; reading Relax in :mod:`.relaxexpr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.byoc import translate_axes, translate_elementwise, translate_layers
from harness.byoc.nnmodel import (
    ACTIVATION_CODES,
    REASONS,
    Const,
    Lookup,
    ModelIO,
    NNModel,
    Refused,
    Tensor,
    Translation,
    Value,
    layout_of,
    permuted,
)
from harness.byoc.relaxexpr import (
    activation_of,
    flat_args,
    is_const_tensor,
    is_prim_value,
    op_name,
    tensor_shape,
)
from harness.byoc.translate_elementwise import hard_swish, hard_swish_at

# The translator's names its callers (partition, codegen, report, candidates) use, in one place.
__all__ = [
    "REASONS",
    "TRANSLATIONS",
    "Const",
    "ModelIO",
    "NNModel",
    "Refused",
    "Tensor",
    "Value",
    "flat_args",
    "is_const_tensor",
    "layout_of",
    "op_name",
    "permuted",
    "tensor_shape",
    "translate_bindings",
    "translate_call",
]

# Relax operator name -> its translation; the families' names do not overlap.
TRANSLATIONS: dict[str, Translation] = {
    **translate_layers.TRANSLATIONS,
    **translate_elementwise.TRANSLATIONS,
    **translate_axes.TRANSLATIONS,
}


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
        x = hard_swish_at(bindings, i, get, fusable) if model.has("HARD_SWISH") else None
        if x is not None:
            out_var = bindings[i + 3][0]
            values[out_var] = hard_swish(model, get(x), tensor_shape(out_var, "the result"))
            i += 4
            continue
        translation = TRANSLATIONS.get(op_name(call))
        consumed = 1
        bias: Value | None = None
        act: str | None = None
        nxt = bindings[i + 1] if i + 1 < len(bindings) else None
        takes_bias = translation is not None and translation.takes_bias
        if takes_bias and nxt is not None and fusable(var) and op_name(nxt[1]) == "relax.add":
            other = _other_arg(nxt[1], var)
            if other is not None and _is_bias(get(other), tensor_shape(call, "result")):
                bias = get(other)
                consumed += 1
                var = nxt[0]
                nxt = bindings[i + 2] if i + 2 < len(bindings) else None
        if nxt is not None and fusable(var) and nxt[1].args[0].same_as(var):
            act = activation_of(nxt[1])
            if act is not None and translation is not None and translation.fuses_activation:
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
        if not isinstance(arg, relax.ShapeExpr) and not is_prim_value(arg):
            tensor_shape(arg, f"input {k}")
    act_code = ACTIVATION_CODES[act] if act else 0
    translation = TRANSLATIONS.get(name)
    if translation is None:
        raise Refused(
            "unsupported operator", f"the codegen has no translation of {name or call.op}"
        )
    return translation.emit(model, call, get, out_shape, bias, act_code)
