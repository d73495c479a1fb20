"""Accuracy of a run's outputs against reference outputs (onnxruntime, LiteRT, ...).

An element passes when ``|a - r| <= atol + rtol * |r|``, with tolerances chosen by dtype:

=================  ======  ======  ===========================================
dtype              atol    rtol    why
=================  ======  ======  ===========================================
float64            1e-6    1e-5    other summation orders, other libm
float32            1e-4    1e-3    other kernels, fused multiply-add, fast math
float16 (2-byte)   1e-2    1e-2    half precision accumulators
int8, uint8        1       0       quantized: one step of requantization rounding
other int, bool    0       0       exact
=================  ======  ======  ===========================================

NaN and infinities: an element where both sides are NaN, or both the same infinity, agrees.
An output NaN where the reference has a number fails, and is counted in ``nan_count``; the
errors of such an output are then NaN as well (the error is not a number).

``top1_agree`` is only computed for outputs that look like class scores (a float
``[batch, C]`` or ``[1, ..., 1, C]`` tensor with ``C >= 2``). It is reported, not judged:
a near-tie may flip within tolerance.

``first_divergence`` (:class:`FirstDivergence`) is there only when an offloading backend's
outputs failed the comparison: where they first went wrong (:mod:`harness.measure.divergence`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    MISSING,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    JsonValue,
    PlainSerializer,
    TypeAdapter,
)

from harness.errors import JobError


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _nan_for_none(value: object) -> object:
    return math.nan if value is None else value


JsonFloat = Annotated[
    float,
    BeforeValidator(_nan_for_none),
    PlainSerializer(_finite_or_none, return_type=float | None),
]
"""A float that may not be finite (an error with NaN in the outputs); JSON has no NaN or
infinity, so the JSON form says null, and reads null back as NaN."""


@dataclass(frozen=True)
class Tolerance:
    """An element passes when ``|a - r| <= atol + rtol * |r|``."""

    atol: float
    rtol: float

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}


_FLOAT_TOLERANCES: dict[int, Tolerance] = {
    8: Tolerance(atol=1e-6, rtol=1e-5),
    4: Tolerance(atol=1e-4, rtol=1e-3),
    2: Tolerance(atol=1e-2, rtol=1e-2),
}
_QUANTIZED = Tolerance(atol=1.0, rtol=0.0)
_EXACT = Tolerance(atol=0.0, rtol=0.0)


def tolerance_for(dtype: npt.DTypeLike) -> Tolerance:
    """The tolerance :func:`compare` uses for outputs of ``dtype``."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return _FLOAT_TOLERANCES[8 if dt.itemsize >= 8 else 4 if dt.itemsize >= 4 else 2]
    if dt in (np.dtype(np.int8), np.dtype(np.uint8)):
        return _QUANTIZED
    if dt.kind in "iub":
        return _EXACT
    raise JobError("compare", f"outputs of dtype {dt} cannot be compared (numbers or bool only)")


def _rel_eps(dtype: np.dtype[Any], tol: Tolerance) -> float:
    """Floor of ``|r|`` in the relative error, so exact zeros in the reference don't blow up.

    For floats it is the dtype's ``atol``: below that scale the comparison is absolute anyway,
    so a relative error of 1 there means "off by atol". Integers step by 1, so 1.
    """
    return tol.atol if dtype.kind == "f" else 1.0


@dataclass(frozen=True)
class OutputAccuracy:
    """Accuracy of one output tensor."""

    index: int
    shape: tuple[int, ...]
    dtype: str
    max_abs_err: JsonFloat
    max_rel_err: JsonFloat
    mismatched: int
    """Elements outside the tolerance (NaN mismatches included)."""
    nan_count: int
    """Elements that are NaN in the output and a number in the reference."""
    top1_agree: float | None
    passed: bool
    tolerance: Tolerance

    def to_dict(self) -> dict[str, JsonValue]:
        """The JSON form: non-finite errors (NaN, inf) become None."""
        dumped: dict[str, JsonValue] = _OUTPUT.dump_python(self, mode="json")
        return dumped


class SubgraphOp(BaseModel):
    """An operator of an offloaded subgraph (``nn.conv2d``) and its result's shape."""

    model_config = ConfigDict(extra="allow")

    op: str
    shape: list[int]


class DivergentSubgraph(BaseModel):
    """The offloaded subgraph whose outputs first differ from its CPU build's.

    ``position``: among the offloaded calls of one inference, in execution order (from 0);
    ``call``: which call of its function this was (from 0: the functions of identical
    subgraphs may be shared by several call sites). ``ops``: its Relax operators in order;
    ``operations``: the NNAPI-family operations they became; ``inputs`` and ``outputs``: the
    shapes of its tensor arguments (weights apart: ``weights`` counts them) and results. The
    errors are its outputs' against the same function compiled for the CPU and fed the same
    arguments: ``max_abs_err``, ``max_rel_err``, ``cosine`` as in :class:`Accuracy`,
    ``per_output`` per result."""

    model_config = ConfigDict(extra="allow")

    symbol: str
    position: int
    call: int
    ops: list[SubgraphOp]
    operations: list[str]
    inputs: list[list[int]]
    weights: int
    outputs: list[list[int]]
    max_abs_err: JsonFloat
    max_rel_err: JsonFloat
    cosine: JsonFloat
    per_output: list[OutputAccuracy]


class FirstDivergence(BaseModel):
    """Where a failed offloading run first went wrong: each offloaded subgraph, in execution
    order, run by the host reference driver and by its CPU build on the arguments it received.

    ``status``: ``found`` (``subgraph`` says which), ``none`` (every subgraph agreed with its
    CPU build: the difference is elsewhere, e.g. in a phone's own driver), or ``failed`` (it
    could not be computed; ``message`` says why). ``checked`` of ``calls`` offloaded calls
    were compared (comparison stops at the first divergence). ``wall_ms``: what computing it
    took."""

    model_config = ConfigDict(extra="allow")

    status: Literal["found", "none", "failed"]
    message: str
    checked: int = 0
    calls: int = 0
    subgraph: DivergentSubgraph | None = None
    wall_ms: float = 0.0


@dataclass(frozen=True)
class Accuracy:
    """Accuracy of all outputs of a run against one reference.

    ``max_abs_err`` and ``max_rel_err`` are the largest over all outputs, ``cosine`` is the
    cosine similarity of all outputs flattened together (float64), ``top1_agree`` the fraction
    of class-score rows whose argmax agrees, pooled over the outputs that look like class
    scores (None if none does). ``tolerance`` maps each dtype present to its tolerance.
    ``first_divergence``: an offloading run that failed, where it first went wrong (absent
    otherwise).
    """

    reference: str
    max_abs_err: JsonFloat
    max_rel_err: JsonFloat
    cosine: JsonFloat
    top1_agree: float | None
    passed: bool
    nan_count: int
    per_output: tuple[OutputAccuracy, ...]
    tolerance: dict[str, Tolerance]
    first_divergence: FirstDivergence | MISSING = MISSING

    def to_dict(self) -> dict[str, JsonValue]:
        """The JSON form (a result document's ``accuracy``): non-finite errors (NaN, inf)
        become None."""
        dumped: dict[str, JsonValue] = _ACCURACY.dump_python(self, mode="json")
        return dumped


_OUTPUT = TypeAdapter(OutputAccuracy)
_ACCURACY = TypeAdapter(Accuracy)


def looks_like_class_scores(shape: tuple[int, ...], dtype: npt.DTypeLike) -> bool:
    """A float ``[batch, C]`` or ``[1, ..., 1, C]`` tensor with ``C >= 2``."""
    if np.dtype(dtype).kind != "f" or len(shape) < 2 or shape[-1] < 2:
        return False
    return len(shape) == 2 or all(d == 1 for d in shape[:-1])


def _check_pair(i: int, out: npt.NDArray[Any], ref: npt.NDArray[Any]) -> None:
    if out.shape != ref.shape:
        raise JobError(
            "compare",
            f"output {i}: shape {out.shape} differs from the reference's {ref.shape}",
        )
    if out.dtype != ref.dtype:
        raise JobError(
            "compare",
            f"output {i}: dtype {out.dtype} differs from the reference's {ref.dtype} "
            f"(shapes {out.shape} and {ref.shape})",
        )


def _compare_one(i: int, out: npt.NDArray[Any], ref: npt.NDArray[Any]) -> OutputAccuracy:
    tol = tolerance_for(ref.dtype)
    a = out.astype(np.float64).ravel()
    r = ref.astype(np.float64).ravel()
    # Pairs that agree although not finite: both NaN, or the same infinity.
    same_special = (np.isnan(a) & np.isnan(r)) | (np.isinf(a) & (a == r))
    nan_count = int(np.count_nonzero(np.isnan(a) & ~np.isnan(r)))
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(same_special, 0.0, np.abs(a - r))
        ref_mag = np.where(same_special, 0.0, np.abs(r))
        # An infinite error never passes, even against an infinite rtol * |r|.
        ok = same_special | (np.isfinite(abs_err) & (abs_err <= tol.atol + tol.rtol * ref_mag))
        rel_err = np.where(
            np.isinf(abs_err), np.inf, abs_err / np.maximum(ref_mag, _rel_eps(ref.dtype, tol))
        )
    mismatched = int(ok.size - np.count_nonzero(ok))
    if a.size == 0:
        max_abs = max_rel = 0.0
    elif np.isnan(abs_err).any():
        max_abs = max_rel = math.nan
    else:
        max_abs, max_rel = float(abs_err.max()), float(rel_err.max())
    top1: float | None = None
    if looks_like_class_scores(ref.shape, ref.dtype) and a.size:
        c = ref.shape[-1]
        top1 = float(np.mean(np.argmax(out.reshape(-1, c), 1) == np.argmax(ref.reshape(-1, c), 1)))
    return OutputAccuracy(
        index=i,
        shape=tuple(int(d) for d in ref.shape),
        dtype=str(ref.dtype),
        max_abs_err=max_abs,
        max_rel_err=max_rel,
        mismatched=mismatched,
        nan_count=nan_count,
        top1_agree=top1,
        passed=mismatched == 0,
        tolerance=tol,
    )


def _cosine(outs: Sequence[npt.NDArray[Any]], refs: Sequence[npt.NDArray[Any]]) -> float:
    if not outs:
        return 1.0
    a = np.concatenate([o.astype(np.float64).ravel() for o in outs])
    r = np.concatenate([x.astype(np.float64).ravel() for x in refs])
    keep = ~((np.isnan(a) & np.isnan(r)) | (np.isinf(a) & (a == r)))
    a, r = a[keep], r[keep]
    if not (np.isfinite(a).all() and np.isfinite(r).all()):
        return math.nan
    na, nr = float(np.abs(a).max(initial=0.0)), float(np.abs(r).max(initial=0.0))
    if na == 0.0 and nr == 0.0:
        return 1.0
    if na == 0.0 or nr == 0.0:
        return 0.0
    a, r = a / na, r / nr  # scaled first so squares neither overflow nor underflow
    cos = float(np.dot(a, r) / (np.linalg.norm(a) * np.linalg.norm(r)))
    return max(-1.0, min(1.0, cos))


def compare(
    outputs: Sequence[npt.NDArray[Any]],
    reference: Sequence[npt.NDArray[Any]],
    *,
    reference_name: str,
) -> Accuracy:
    """Compare a run's outputs with reference outputs, in order.

    ``reference_name`` says what produced the reference (``"onnxruntime"``, ``"litert"``...).
    Outputs and reference must agree in count, shapes and dtypes; otherwise JobError
    ("compare") naming the output and both shapes. See the module docstring for tolerances.
    """
    outs = [np.asarray(o) for o in outputs]
    refs = [np.asarray(r) for r in reference]
    if len(outs) != len(refs):
        shapes_o = [o.shape for o in outs]
        shapes_r = [r.shape for r in refs]
        raise JobError(
            "compare",
            f"{len(outs)} outputs {shapes_o} but the reference has {len(refs)} {shapes_r}",
        )
    for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
        _check_pair(i, o, r)
    per = tuple(_compare_one(i, o, r) for i, (o, r) in enumerate(zip(outs, refs, strict=True)))
    errs_abs = [p.max_abs_err for p in per]
    errs_rel = [p.max_rel_err for p in per]
    rows = agree = 0.0
    for p, r in zip(per, refs, strict=True):
        if p.top1_agree is not None:
            n_rows = r.size // r.shape[-1]
            rows += n_rows
            agree += p.top1_agree * n_rows
    return Accuracy(
        reference=reference_name,
        max_abs_err=_max_or_nan(errs_abs),
        max_rel_err=_max_or_nan(errs_rel),
        cosine=_cosine(outs, refs),
        top1_agree=agree / rows if rows else None,
        passed=all(p.passed for p in per),
        nan_count=sum(p.nan_count for p in per),
        per_output=per,
        tolerance={p.dtype: p.tolerance for p in per},
    )


def _max_or_nan(values: Sequence[float]) -> float:
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(values, default=0.0)
