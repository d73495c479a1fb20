"""The device canary: a small fixed reference model that every phone of a night measures
before the suite's models, so that a phone that drifts (throttles, misbehaves, runs something
else) is told apart from a model that got slower.

The canary is MLPerf Tiny's DS-CNN with weights from a fixed seed: the same bytes every time,
so the same sha256, stored once in the farm's model store as ``edgefarm-canary``. It runs on
``tvm-cpu`` with a short fixed protocol (:data:`CANARY_SETTINGS`), in a job of variant
``canary`` that is never analysed as a model series.

The drift rule (:func:`canary_drift`) compares tonight's canary median of a phone with the
phone's own previous canary nights (any suite's; the last ``window``): in log space, tonight
is drifting when it is further from the history's median than ``k`` robust standard deviations
(1.4826 x MAD) *and* than ``min_change``. Only nights with the same canary baseline count:
the same TVM version, canary model and phone build fingerprint (a TVM upgrade or a phone's OS
update moves every canary on purpose; it is a toolchain change, which alerts say, not a drift),
so such a change starts the phone's history afresh. History includes drifted nights, so a phone
whose speed changed for good without a build change stops being suspect once its history has
moved with it. With fewer than ``min_history`` previous nights there is no verdict.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.db import Job, Night, Result, Run, Series
from harness.measure.protocol import MeasurementRequest

CANARY_NAME = "edgefarm-canary"
CANARY_VARIANT = "canary"  # the canary job's variant: never analysed as a model series
CANARY_BACKEND = "tvm-cpu"
_EXAMPLE, _SEED = "ds-cnn", 1_000_003  # a seed no example upload uses by accident
# Short and fixed: the canary's protocol never follows a suite's settings, so nights compare.
CANARY_SETTINGS = MeasurementRequest(warmup=5, min_iterations=30, min_seconds=0.3, seed=0)
ROBUST_SIGMA = 1.4826  # MAD -> standard deviation of a normal distribution


@lru_cache(maxsize=1)
def canary_bytes() -> bytes:
    """The canary model's ONNX bytes: the same on every call and every host."""
    from harness.examples.mlperf_tiny import example_bytes

    return example_bytes(_EXAMPLE, _SEED)


def canary_sha256() -> str:
    return hashlib.sha256(canary_bytes()).hexdigest()


@dataclass(frozen=True)
class CanaryRule:
    """When a phone's canary drifts: ``|log(tonight / median)| > max(k * 1.4826 * MAD,
    log(1 + min_change))`` over its last ``window`` canary nights, given ``min_history``."""

    k: float = 5.0
    min_change: float = 0.15
    min_history: int = 5
    window: int = 14


@dataclass(frozen=True)
class CanaryDrift:
    """A phone's canary tonight against its own history."""

    median_ms: float  # tonight
    baseline_ms: float  # the median of its previous canary nights
    ratio: float  # tonight / baseline
    bound: float  # the relative change allowed tonight (its noise, at least min_change)
    nights: int  # previous canary nights compared with
    drifting: bool

    def describe(self) -> str:
        return (
            f"canary {CANARY_NAME} {self.median_ms:.4g} ms against its median "
            f"{self.baseline_ms:.4g} ms over {self.nights} nights "
            f"({(self.ratio - 1) * 100:+.1f}%, within ±{self.bound * 100:.1f}% is noise)"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def canary_drift(
    tonight_ms: float, history_ms: Sequence[float], rule: CanaryRule | None = None
) -> CanaryDrift | None:
    """Tonight's canary median against the phone's previous ones (newest last); None when
    there is too little history (or no valid value) to judge."""
    rule = rule or CanaryRule()
    history = [v for v in history_ms[-rule.window :] if v > 0 and math.isfinite(v)]
    if len(history) < rule.min_history or not (tonight_ms > 0 and math.isfinite(tonight_ms)):
        return None
    logs = [math.log(v) for v in history]
    centre = statistics.median(logs)
    mad = statistics.median(abs(v - centre) for v in logs)
    allowed = max(rule.k * ROBUST_SIGMA * mad, math.log1p(rule.min_change))
    distance = math.log(tonight_ms) - centre
    return CanaryDrift(
        median_ms=tonight_ms,
        baseline_ms=math.exp(centre),
        ratio=math.exp(distance),
        bound=math.expm1(allowed),
        nights=len(history),
        drifting=abs(distance) > allowed,
    )


def canary_medians(
    session: Session, night: Night, window: int
) -> dict[int, tuple[float | None, list[float]]]:
    """Per device that measured the canary in ``night``: tonight's median (None if its run
    failed) and its previous canary medians from earlier nights of any suite, oldest first
    (at most ``window``)."""
    series = (
        (Series.suite_id == Night.suite_id)
        & (Series.device_id == Run.device_id)
        & (Series.model_name == CANARY_NAME)
        & (Series.backend == CANARY_BACKEND)
        & (Series.variant == CANARY_VARIANT)
    )
    tonight = session.execute(
        select(Run.device_id, Result, Series.id)
        .join(Job, Run.job_id == Job.id)
        .join(Night, Job.night_id == Night.id)
        .outerjoin(Result, Result.run_id == Run.id)
        .outerjoin(Series, series)
        .where(Job.night_id == night.id, Job.variant == CANARY_VARIANT)
    ).all()
    out: dict[int, tuple[float | None, list[float]]] = {}
    for device_id, result, series_id in tonight:
        median = result.median_ms if result is not None and result.status == "ok" else None
        baseline = _baseline(night, series_id)
        rows = session.execute(
            select(Result.median_ms, Night, Series.id)
            .join(Run, Result.run_id == Run.id)
            .join(Job, Run.job_id == Job.id)
            .join(Night, Job.night_id == Night.id)
            .join(Series, series)
            .where(
                Job.variant == CANARY_VARIANT,
                Run.device_id == device_id,
                Result.status == "ok",
                Result.median_ms.is_not(None),
                Night.id != night.id,
                Night.scheduled_for <= night.scheduled_for,
            )
            .order_by(Night.scheduled_for.desc(), Night.id.desc())
            .limit(window * 4)
        ).all()
        history = [float(v) for v, n, s in rows if v is not None and _baseline(n, s) == baseline][
            :window
        ]
        out[device_id] = (median, history[::-1])
    return out


def _baseline(night: Night, series_id: int | None) -> tuple[object, ...]:
    """What the canary's speed may change with on purpose: TVM, the canary, the phone's build."""
    stored = (night.toolchain or {}).get("series", {}).get(str(series_id)) or {}
    return (
        stored.get("tvm"),
        stored.get("model_sha256"),
        (stored.get("device") or {}).get("fingerprint"),
    )
