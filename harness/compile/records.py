"""What a build says about itself, as typed JSON: the compile child's request and result, and
an artifact's ``manifest.json`` (its provenance; a result document copies parts of it)."""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.errors import Stage
from harness.jsontypes import BackendOptions
from harness.modelio.specs import TensorJson
from harness.partition_report import CalibrationInfo, PartitionReport

TvmTarget = dict[str, str | list[str]]
"""A TVM target as JSON: ``{"kind": "llvm", "mtriple": ..., "mattr": ["+neon"]}``."""


class LoweringJson(TypedDict):
    offload: str | None


class ArtifactExtra(TypedDict, total=False):
    """What a lowered module says about itself: the partition report of an offloading build,
    or what a calibration build holds."""

    partition: PartitionReport
    calibration: CalibrationInfo


class TuningProvenance(TypedDict):
    """What a tuned build applied: the digest of the records of its model's workloads, how
    many (one per measured trial), on how many workloads, measured on which device class; once
    built, the TIR functions a record scheduled (``scheduled``)."""

    records: str
    trials: int
    workloads: int
    device_class: str
    scheduled: NotRequired[list[str]]


class CompileRequest(TypedDict):
    """One build, as the compile child reads it on stdin."""

    model_path: str
    model_name: str
    inputs: list[str]  # input specs NAME:1x3x8x8:float32
    backend: str
    lowering: LoweringJson
    target: str
    options: BackendOptions
    out_dir: str
    ndk_home: str | None
    api_level: int
    tuning_dir: NotRequired[str]  # a MetaSchedule database whose records the build applies
    # Only lower the model and answer its workloads (the structural hashes of its TIR
    # functions) instead of building it.
    workloads_only: NotRequired[bool]


class CompileResult(TypedDict):
    """What the compile child answers: ``ok`` with the build's files and times, or ``error``
    with a stage and one line."""

    status: Literal["ok", "error"]
    stage: NotRequired[Stage]
    message: NotRequired[str]
    toolchain: NotRequired[dict[str, str]]
    archive: NotRequired[str]
    library: NotRequired[str]
    extra: NotRequired[ArtifactExtra]
    stages_ms: NotRequired[dict[str, float]]
    compile_ms: NotRequired[float]
    workloads: NotRequired[list[str]]  # a workloads_only request's answer
    scheduled: NotRequired[list[str]]  # the TIR functions the tuning records scheduled


class ModelRef(TypedDict):
    name: str
    sha256: str
    format: str


class Sizes(TypedDict, total=False):
    library_bytes: int
    total_bytes: int


class Manifest(TypedDict):
    """An artifact's ``manifest.json``: what was built, from what, with what. ``key`` and
    ``sizes`` are added when the artifact is published."""

    library: str
    backend: str
    target: str
    target_tvm: TvmTarget
    options: BackendOptions
    tvm_version: str
    edgefarm_version: str
    compile_version: str
    model: ModelRef
    inputs: list[TensorJson]
    outputs: list[TensorJson]
    compile_ms: float
    stages_ms: dict[str, float]
    archive: str | None
    toolchain: dict[str, str]
    created_at: str
    extra: NotRequired[ArtifactExtra]
    tuning: NotRequired[TuningProvenance]
    key: NotRequired[str]
    sizes: NotRequired[Sizes]
