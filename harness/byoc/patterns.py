"""Pattern tables: what each backend offers to offload.

* NNAPI: TVM's own table (``tvm.relax.backend.contrib.nnapi``), filtered by feature level
  with TVM's ``min_feature_level`` exactly as ``partition_for_nnapi`` does. The patterns are
  re-issued with a ``check`` so that a match the codegen cannot emit stays on the CPU with its
  reason, instead of failing the build (``partition_for_nnapi`` has no check hook).
* Neuron: our own table (``relax.dpl``) of what the Neuron Adapter runs: conv2d (incl.
  depthwise and grouped) and dense/matmul (incl. a transposed operand), each with an optional
  bias and fused activation; add/subtract/multiply (+ activation); relu, relu6 (clip 0..6),
  sigmoid, tanh; max/avg pooling; softmax; concat; reshape; transpose; mean.

A table is built on request (no registration at import of this module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def nnapi_patterns(feature_level: int, check: Check) -> list[Any]:
    """TVM's NNAPI patterns available at ``feature_level``, each with ``check``."""
    # TVM registers this table in its pattern registry when the module is first imported.
    from tvm.relax.backend.contrib import nnapi as tvm_nnapi
    from tvm.relax.backend.pattern_registry import get_patterns_with_prefix
    from tvm.relax.transform import FusionPattern

    return [
        FusionPattern(p.name, p.pattern, p.annotation_patterns, check)
        for p in get_patterns_with_prefix("nnapi")
        if feature_level >= tvm_nnapi.min_feature_level(p.name)
    ]


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

    for op in ("add", "subtract", "multiply"):
        binary = is_op(f"relax.{op}")(wildcard(), wildcard())
        add(f"{op}_act", act(binary))
        add(op, binary)

    add("relu", is_op("relax.nn.relu")(wildcard()))
    add("relu6", is_op("relax.clip")(wildcard(), wildcard(), wildcard()))
    add("sigmoid", is_op("relax.sigmoid")(wildcard()))
    add("tanh", is_op("relax.tanh")(wildcard()))
    add("max_pool2d", is_op("relax.nn.max_pool2d")(wildcard()))
    add("avg_pool2d", is_op("relax.nn.avg_pool2d")(wildcard()))
    add("softmax", is_op("relax.nn.softmax")(wildcard()))
    add("concat", is_op("relax.concat")(wildcard()))
    add("reshape", is_op("relax.reshape")(wildcard(), wildcard()))
    add("transpose", is_op("relax.permute_dims")(wildcard()))
    add("mean", is_op("relax.mean")(wildcard()))
    return patterns
