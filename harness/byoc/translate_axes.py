"""Translations of operators whose axes must be mapped between Relax's layout and NHWC:
softmax, mean, reshape, permute_dims, concat.

An axis ``a`` of a Relax tensor is NN axis ``inverse(layout_of(rank))[a]``. A reshape of a
4-D tensor whose NCHW and NHWC bytes differ goes through a TRANSPOSE to plain NCHW and back.
"""

from __future__ import annotations

from typing import Any

from harness.byoc.nnmodel import (
    NCHW_FROM_NHWC,
    NHWC,
    Lookup,
    NNModel,
    Refused,
    Tensor,
    Translation,
    Value,
    inverse,
    layout_of,
    nhwc_is_nchw,
    require_tensor,
)
from harness.byoc.relaxexpr import flat_args, ints


def softmax(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    x = require_tensor(get(call.args[0]), "softmax input")
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


def mean(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    x = require_tensor(get(call.args[0]), "mean input")
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


def reshape(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    return _reshape_tensor(model, require_tensor(get(call.args[0]), "reshape input"), out_shape)


def _reshape_tensor(model: NNModel, x: Tensor, out_shape: tuple[int, ...]) -> Value:
    """``x`` reshaped to ``out_shape`` (Relax shapes), through plain NCHW where NHWC differs."""
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


def permute(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    x = require_tensor(get(call.args[0]), "transpose input")
    rank = len(x.shape)
    axes = call.attrs.axes
    perm = tuple(reversed(range(rank))) if axes is None else ints(axes)
    perm = tuple(p + rank if p < 0 else p for p in perm)
    lin, lout = layout_of(rank), layout_of(rank)
    inv_in = inverse(lin)
    nn_perm = tuple(inv_in[perm[lout[k]]] for k in range(rank))
    out = model.new_tensor(out_shape)
    model.emit("TRANSPOSE", [x.operand, model.i32vec(nn_perm)], [out.operand])
    return out


def concat(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
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


TRANSLATIONS = {
    "relax.nn.softmax": Translation(softmax),
    "relax.mean": Translation(mean),
    "relax.reshape": Translation(reshape),
    "relax.permute_dims": Translation(permute),
    "relax.concat": Translation(concat),
}
