"""Pattern tables: what each backend offers to offload.

* NNAPI: TVM's own table (``tvm.relax.backend.contrib.nnapi``), filtered by feature level
  with TVM's ``min_feature_level`` exactly as ``partition_for_nnapi`` does, after edgefarm's
  additions (:data:`NNAPI_ADDITIONS`: NNAPI operations TVM's table lacks and the codegen
  emits, each with the feature level that brought it): hard-swish (HARD_SWISH, 4), clip
  (RELU/RELU1/RELU6, or MAXIMUM/MINIMUM from 3), reshape, conv2d with its bias and activation
  fused or without a bias, fully connected layers (FULLY_CONNECTED, 1; TVM's table has matmul
  only as BATCH_MATMUL, 6), average pooling and concatenation. The patterns are re-issued
  with a ``check`` so that a match the codegen cannot emit stays on the CPU with its reason,
  instead of failing the build (``partition_for_nnapi`` has no check hook).
* Neuron: our own table (``relax.dpl``) of what the Neuron Adapter runs: hard-swish
  (NEURON_HARD_SWISH); conv2d (incl. depthwise and grouped) and dense/matmul (incl. a
  transposed operand), each with an optional bias and fused activation;
  add/subtract/multiply/divide (+ activation), maximum, minimum, power; relu, clip (RELU6/RELU1
  or MAXIMUM/MINIMUM), sigmoid, tanh, sqrt, rsqrt, exp, log, abs, floor, negative; max/avg
  pooling; softmax; concat; reshape; transpose; mean.

Hard-swish comes first in both: otherwise its add and clip would be taken as an add with a
fused RELU6.

A table is built on request (no registration at import of this module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


# edgefarm's additions to TVM's NNAPI table: pattern name -> the NNAPI feature level that
# brought its operation (NNAPI's documentation).
NNAPI_ADDITIONS = {
    "nnapi.hard_swish": 4,
    "nnapi.clip": 1,  # RELU1/RELU6 (1); other bounds need MAXIMUM/MINIMUM (3): the check says
    "nnapi.reshape": 1,
    "nnapi.conv2d_bias_act": 1,
    "nnapi.conv2d_nobias": 1,
    "nnapi.fully_connected": 1,
    "nnapi.average_pool_2d": 1,
    "nnapi.concatenation": 1,
}


def hard_swish_patterns() -> list[Any]:
    """``x * clip(x + 3, 0, 6) / 6`` as importers write it: ``(x * c) / 6`` or ``x * (c / 6)``,
    ``/ 6`` or ``* (1/6)``, with commuted operands. The translator checks the constants."""
    from tvm.relax.dpl.pattern import DFPattern, is_const, is_op, wildcard

    x = wildcard()
    shifted = is_op("relax.add")(x, is_const()) | is_op("relax.add")(is_const(), x)
    clipped = is_op("relax.clip")(shifted, wildcard(), wildcard())

    def times(a: DFPattern, b: DFPattern) -> DFPattern:
        return is_op("relax.multiply")(a, b) | is_op("relax.multiply")(b, a)

    def sixth(a: DFPattern) -> DFPattern:
        return is_op("relax.divide")(a, is_const()) | times(a, is_const())

    return [sixth(times(x, clipped)), times(x, sixth(clipped))]


def nnapi_patterns(feature_level: int, check: Check) -> list[Any]:
    """edgefarm's additions and TVM's NNAPI patterns available at ``feature_level``, each
    with ``check``."""
    # TVM registers this table in its pattern registry when the module is first imported.
    from tvm.relax.backend.contrib import nnapi as tvm_nnapi
    from tvm.relax.backend.pattern_registry import get_patterns_with_prefix
    from tvm.relax.dpl.pattern import is_const, is_op, wildcard
    from tvm.relax.transform import FusionPattern

    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    additions: list[tuple[str, Any]] = [
        *(("nnapi.hard_swish", p) for p in hard_swish_patterns()),
        ("nnapi.conv2d_bias_act", _act(is_op("relax.add")(conv, is_const()))),
        ("nnapi.fully_connected", _dense(is_op("relax.matmul")(wildcard(), is_const()))),
        ("nnapi.clip", is_op("relax.clip")(wildcard(), wildcard(), wildcard())),
        ("nnapi.reshape", is_op("relax.reshape")(wildcard(), wildcard())),
        ("nnapi.conv2d_nobias", conv),
        ("nnapi.average_pool_2d", is_op("relax.nn.avg_pool2d")(wildcard())),
        ("nnapi.concatenation", is_op("relax.concat")(wildcard())),
    ]
    ours = [
        FusionPattern(name, pattern, {}, check)
        for name, pattern in additions
        if feature_level >= NNAPI_ADDITIONS[name]
    ]
    theirs = [
        FusionPattern(p.name, p.pattern, p.annotation_patterns, check)
        for p in get_patterns_with_prefix("nnapi")
        if feature_level >= tvm_nnapi.min_feature_level(p.name)
    ]
    # Larger patterns first: hard-swish, a conv2d with its bias and activation (fused into
    # the CONV_2D) and a fully connected layer with its bias before TVM's single operators
    # (whose add would take the bias); a conv2d alone after TVM's conv2d + add.
    first = {"nnapi.hard_swish", "nnapi.conv2d_bias_act", "nnapi.fully_connected"}
    return [p for p in ours if p.name in first] + theirs + [p for p in ours if p.name not in first]


def _act(x: Any) -> Any:
    """``x`` followed by relu or a clip (which the translator fuses when it is relu1/relu6)."""
    from tvm.relax.dpl.pattern import is_op, wildcard

    return is_op("relax.nn.relu")(x) | is_op("relax.clip")(x, wildcard(), wildcard())


def _dense(matmul: Any) -> Any:
    """A matmul with an optional bias add after it."""
    from tvm.relax.dpl.pattern import is_const, is_op

    return is_op("relax.add")(matmul, is_const()) | matmul


def nnapi_excluded(feature_level: int) -> dict[str, tuple[str, int]]:
    """Relax operators whose (single-op) TVM NNAPI pattern is above ``feature_level``:
    ``{"relax.matmul": ("nnapi.batch_matmul", 6)}``."""
    from tvm.relax.backend.contrib import nnapi as tvm_nnapi
    from tvm.relax.backend.pattern_registry import get_patterns_with_prefix
    from tvm.relax.dpl.pattern import CallPattern, ExprPattern

    excluded: dict[str, tuple[str, int]] = {}
    for p in get_patterns_with_prefix("nnapi"):
        level = tvm_nnapi.min_feature_level(p.name)
        pattern = p.pattern
        if level <= feature_level or not isinstance(pattern, CallPattern):
            continue
        if isinstance(pattern.op, ExprPattern):
            excluded[str(pattern.op.expr.name)] = (str(p.name), level)
    return excluded


def neuron_patterns(check: Check) -> list[Any]:
    """Our Neuron Adapter table, largest patterns first."""
    from tvm.relax.dpl.pattern import DFPattern, is_const, is_op, wildcard
    from tvm.relax.transform import FusionPattern

    def act(x: DFPattern) -> DFPattern:
        return is_op("relax.nn.relu")(x) | is_op("relax.clip")(x, wildcard(), wildcard())

    patterns: list[Any] = []

    def add(name: str, pattern: DFPattern) -> None:
        patterns.append(FusionPattern(f"neuron.{name}", pattern, {}, check))

    for pattern in hard_swish_patterns():
        add("hard_swish", pattern)

    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    conv_bias = is_op("relax.add")(conv, is_const())
    add("conv2d_bias_act", act(conv_bias))
    add("conv2d_bias", conv_bias)
    add("conv2d_act", act(conv))
    add("conv2d", conv)

    rhs = wildcard() | is_op("relax.permute_dims")(wildcard())
    dense = is_op("relax.matmul")(wildcard(), rhs)
    dense_bias = is_op("relax.add")(dense, is_const())
    add("dense_bias_act", act(dense_bias))
    add("dense_bias", dense_bias)
    add("dense_act", act(dense))
    add("dense", dense)

    for op in ("add", "subtract", "multiply", "divide"):
        binary = is_op(f"relax.{op}")(wildcard(), wildcard())
        add(f"{op}_act", act(binary))
        add(op, binary)
    for op in ("maximum", "minimum", "power"):
        add(op, is_op(f"relax.{op}")(wildcard(), wildcard()))

    add("relu", is_op("relax.nn.relu")(wildcard()))
    add("clip", is_op("relax.clip")(wildcard(), wildcard(), wildcard()))
    add("sigmoid", is_op("relax.sigmoid")(wildcard()))
    add("tanh", is_op("relax.tanh")(wildcard()))
    # NEURON_SQRT, _RSQRT, _EXP, _LOG, _ABS, _FLOOR, _NEG (a layer norm's sqrt, ...)
    for op in ("sqrt", "rsqrt", "exp", "log", "abs", "floor", "negative"):
        add(op, is_op(f"relax.{op}")(wildcard()))
    add("max_pool2d", is_op("relax.nn.max_pool2d")(wildcard()))
    add("avg_pool2d", is_op("relax.nn.avg_pool2d")(wildcard()))
    add("softmax", is_op("relax.nn.softmax")(wildcard()))
    add("concat", is_op("relax.concat")(wildcard()))
    add("reshape", is_op("relax.reshape")(wildcard(), wildcard()))
    add("transpose", is_op("relax.permute_dims")(wildcard()))
    add("mean", is_op("relax.mean")(wildcard()))
    return patterns
