"""The partition report's form: the ``partition`` field of a result document and of an
artifact's manifest (``extra.partition``). :mod:`harness.byoc.report` builds it; the meaning
of each key is documented there. Kept apart from the builder so that reading a document (the
API, the CLI) does not import the BYOC compiler.
"""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict  # pydantic validates these only on 3.11

__all__ = [
    "BoundaryCost",
    "CalibrationEntry",
    "CalibrationInfo",
    "CalibrationReport",
    "CandidateCost",
    "CandidateRecord",
    "CostDecisionReport",
    "CostReport",
    "CpuOp",
    "OpCount",
    "PartitionReport",
    "ProbeEntry",
    "SubgraphCost",
    "TensorType",
]


class OpCount(TypedDict):
    offloaded: int
    total: int


class CpuOp(TypedDict):
    """An operator kept on the CPU, and why."""

    op: str
    reason: str
    detail: str


class BoundaryCost(TypedDict):
    fixed_ms: float
    ms_per_kib: float


class CandidateCost(TypedDict):
    """One offload candidate of a cost decision: its operators and their times."""

    ops: list[str]
    offloaded: bool
    cpu_ms: float
    accel_ms: float


class SubgraphCost(TypedDict):
    ops: int
    accel_ms: float
    boundary_bytes: int
    boundary_ms: float


class CalibrationReport(TypedDict):
    """What measuring a device class's costs did before a ``cost`` partition."""

    device_class: str
    software: str
    variants: dict[str, str]  # placement (cpu, accel) -> the variant its times are kept under
    measured_now: int
    reused: int
    wall_ms: float


class CostReport(TypedDict):
    """The cost model's decision: predicted times and each candidate's costs."""

    device_class: str
    predicted_cpu_only_ms: float
    predicted_all_ms: float
    boundary: BoundaryCost
    candidates: list[CandidateCost]
    subgraphs: list[SubgraphCost]
    calibration: NotRequired[CalibrationReport]


class CostDecisionReport(TypedDict):
    """What a cost decision adds to the partition report."""

    predicted_ms: float
    cost: CostReport


class PartitionReport(TypedDict):
    """See :mod:`harness.byoc.report`."""

    dialect: str
    feature_level: int | None
    mode: str
    subgraphs: int
    ops_offloaded: int
    ops_total: int
    by_op_type: dict[str, OpCount]
    macs_offloaded_share: float
    boundary_tensors: int
    boundary_bytes: int
    cpu_ops: list[CpuOp]
    predicted_ms: NotRequired[float]
    cost: NotRequired[CostReport]
    measured_ms: NotRequired[float]


# A calibration module's description (harness.byoc.candidates), kept in its artifact's
# manifest.


class CandidateRecord(TypedDict):
    """A :class:`harness.byoc.costmodel.Candidate` as JSON (in a calibration module's
    description)."""

    name: str
    ops: list[str]
    signature: str
    members: list[str]
    inputs: list[tuple[str, int]]
    output_bytes: int
    users: list[str]
    used_outside: bool


class TensorType(TypedDict):
    shape: list[int]
    dtype: str


class CalibrationEntry(TypedDict):
    """A public function of a calibration module: one candidate alone."""

    name: str  # cal_0, cal_1, ...
    candidate: str
    signature: str
    inputs: list[TensorType]


class ProbeEntry(TypedDict):
    """A boundary probe: a ReLU on ``bytes`` in and out."""

    name: str  # probe_0, ...
    shape: list[int]
    bytes: int


class CalibrationInfo(TypedDict):
    """What a calibration module holds (see :mod:`harness.byoc.candidates`); its artifact
    carries it."""

    placement: Literal["cpu", "accel"]
    dialect: str
    candidates: list[CandidateRecord]
    entries: list[CalibrationEntry]
    probes: list[ProbeEntry]
    baseline: str | None  # the whole model's function (CPU builds): the baseline
