"""Translations of the layers with weights or windows: conv2d, max/avg pooling, matmul.

They take a fused activation; conv2d and matmul also a fused per-channel bias. Weights are
constants permuted once into the layout the operation wants (OHWI filters, [units, depth]
fully-connected weights).
"""

from __future__ import annotations

from typing import Any

from harness.byoc.nnmodel import (
    Const,
    Lookup,
    NNModel,
    Refused,
    Translation,
    Value,
    require_tensor,
)
from harness.byoc.relaxexpr import ints, op_name


def conv2d(
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
    x = require_tensor(get(call.args[0]), "conv2d input")
    weight = get(call.args[1])
    if not isinstance(weight, Const):
        raise Refused("shape constraint", "conv2d weights are not constant")
    cout, cin_g, kh, kw = weight.shape
    cin = x.shape[1]
    groups = int(attrs.groups)
    top, left, bottom, right = ints(attrs.padding)
    sh, sw = ints(attrs.strides)
    dh, dw = ints(attrs.dilation)
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


def pool2d(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    attrs = call.attrs
    is_max = op_name(call) == "relax.nn.max_pool2d"
    if attrs.layout != "NCHW" or (attrs.out_layout or "NCHW") != "NCHW":
        raise Refused("shape constraint", f"pool layout {attrs.layout}; expected NCHW")
    if ints(attrs.dilation) != (1, 1):
        raise Refused("shape constraint", "dilated pooling")
    if bool(attrs.ceil_mode):
        raise Refused("shape constraint", "ceil_mode pooling")
    top, left, bottom, right = ints(attrs.padding)
    if not is_max and bool(attrs.count_include_pad) and any((top, left, bottom, right)):
        raise Refused(
            "shape constraint", "average pooling that counts padding (the APIs exclude it)"
        )
    x = require_tensor(get(call.args[0]), "pool input")
    kh, kw = ints(attrs.pool_size)
    sh, sw = ints(attrs.strides)
    out = model.new_tensor(out_shape)
    ins = [x.operand] + [model.i32(v) for v in (left, right, top, bottom, sw, sh, kw, kh, act)]
    model.emit("MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D", ins, [out.operand])
    return out


def matmul(
    model: NNModel,
    call: Any,
    get: Lookup,
    out_shape: tuple[int, ...],
    bias: Value | None,
    act: int,
) -> Value:
    if call.attrs.out_dtype not in (None, "", "float32"):
        raise Refused("dtype", f"matmul accumulates in {call.attrs.out_dtype}")
    a = require_tensor(get(call.args[0]), "matmul lhs")
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
    # NNAPI takes exactly 4 inputs: both adjoint flags are always given.
    flags = [model.flag(False), model.flag(False)]
    model.emit("BATCH_MATMUL", [a.operand, b_operand, *flags], [out.operand])
    if bias is not None or act:
        fused = model.new_tensor(out_shape)
        b_in = model.operand_for(bias, rank) if bias is not None else None
        if b_in is None:
            b_in = model.zeros((1,) * rank)
        model.emit("ADD", [out.operand, b_in, model.i32(act)], [fused.operand])
        return fused
    return out


TRANSLATIONS = {
    "relax.nn.conv2d": Translation(conv2d, takes_bias=True, fuses_activation=True),
    "relax.nn.max_pool2d": Translation(pool2d, fuses_activation=True),
    "relax.nn.avg_pool2d": Translation(pool2d, fuses_activation=True),
    "relax.matmul": Translation(matmul, takes_bias=True, fuses_activation=True),
}
