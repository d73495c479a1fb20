"""Reading Relax expressions for the translator: operator names, static float32 shapes,
constants, attribute values and the activations a call stands for.

TVM is imported inside the functions: importing the translator stays cheap.
"""

from __future__ import annotations

from typing import Any

from harness.byoc.nnmodel import Refused


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
    if not dims and isinstance(expr, relax.Call):
        # A tensor operand of no dimensions is one of unspecified rank to the APIs (NNAPI
        # feature level 3), which an operation's output cannot be: ModelFinish refuses it.
        # (A constant scalar argument is read as a broadcast value; a 0-d input from the CPU
        # is refused where it is read: translate_elementwise.)
        raise Refused("shape constraint", f"{what} is a 0-d tensor (the APIs have no scalars)")
    return tuple(dims)


def is_const_tensor(expr: Any) -> bool:
    """A constant tensor (weights) — not a scalar immediate, which is a Constant too."""
    import tvm
    from tvm import relax

    return isinstance(expr, tvm.ir.Constant) and isinstance(
        getattr(expr, "ty", None), relax.TensorType
    )


def is_prim_value(expr: Any) -> bool:
    """A scalar attribute passed as an argument (clip bounds), not a tensor."""
    from tvm.ir.prim.expr import FloatImm, IntImm

    return isinstance(expr, (IntImm, FloatImm)) or type(expr).__name__ == "PrimValue"


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


def ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _scalar(expr: Any) -> float:
    value = getattr(expr, "value", expr)
    value = getattr(value, "value", value)
    return float(value)


def clip_bounds(call: Any) -> tuple[float, float] | None:
    """A clip's (lower, upper) bounds, when they are constants."""
    try:
        return _scalar(call.args[1]), _scalar(call.args[2])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def clip_activation(call: Any) -> str | None:
    """relu / relu1 / relu6 when a clip's bounds are one of those."""
    bounds = clip_bounds(call)
    if bounds is None:
        return None
    lo, hi = bounds
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
        return clip_activation(call)
    return None
