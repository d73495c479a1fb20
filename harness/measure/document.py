"""The result document: what one measurement of a model, with one backend on one device,
recorded. ``edgefarm bench --json`` writes a list of them, a farm's Result keeps one
(``results.document``) and the API serves them; each is the dump of :class:`ResultDocument`.

The names are stable (README, "The result document"): users, the API and the web pages read
them. A key keeps its place in the order; a key the measurement never wrote is absent
(``MISSING``), which is not the same as a key written as null (``None``): a failed
measurement has ``"latency_ms": null`` but no ``state_before``. Keys a newer writer added are
kept when a document is read back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field, JsonValue, TypeAdapter
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.compile.records import TuningProvenance
from harness.devices.base import DeviceFacts
from harness.devices.records import Cooldown, StateSnapshot
from harness.errors import Stage
from harness.jsontypes import BackendOptions
from harness.measure.accuracy import Accuracy
from harness.measure.protocol import Protocol
from harness.measure.stats import LatencyStats
from harness.modelio import ModelDescription
from harness.partition_report import PartitionReport
from harness.runner.result import OpProfile

Status = Literal["ok", "failed"]


class Record(BaseModel):
    """A part of a result document."""

    model_config = ConfigDict(extra="allow")


class DeviceRef(Record):
    """The ``device`` of a measurement whose device could not be asked for its facts: its
    address (``tcp:10.0.0.7:5555``), and whatever else was known of it."""

    id: str


class ResultError(Record):
    """Why a measurement failed: the stage (``import`` ... ``compare``) and one line.
    ``retryable``: the farm failed, not the user's input (a farm worker tries again)."""

    stage: Stage
    message: str
    retryable: bool | MISSING = MISSING


class BuildProvenance(TypedDict, total=False):
    """What preparing a backend's program adds to the provenance."""

    compile_options: BackendOptions
    artifact_key: str
    compile_ms: float
    cache_hit: bool
    library_bytes: int
    onnxruntime_version: str
    tuning: TuningProvenance


class Provenance(Record):
    """Where every number came from. Which keys are present depends on how far the
    measurement got and on the backend (an artifact for TVM backends, onnxruntime's version
    for ``ort``)."""

    edgefarm_version: str
    tvm_version: str
    target: str | MISSING = MISSING
    protocol: Protocol | MISSING = MISSING
    compile_options: BackendOptions | MISSING = MISSING
    artifact_key: str | MISSING = MISSING
    compile_ms: float | MISSING = MISSING
    cache_hit: bool | MISSING = MISSING
    library_bytes: int | MISSING = MISSING
    # The tuning records a TVM build applied (tvm-cpu; the CPU part of tvm-nnapi and
    # tvm-neuron), and the functions they scheduled (absent: untuned).
    tuning: TuningProvenance | MISSING = MISSING
    onnxruntime_version: str | MISSING = MISSING
    runtime_bundle: str | MISSING = MISSING
    runner_version: str | MISSING = MISSING
    # The threads the run used, as the runner reported them (TVM's thread pool; onnxruntime's
    # intra-op threads): absent when it could not say.
    threads: int | MISSING = MISSING


class ExperimentArm(Record):
    """One side of an A/B experiment: what ran (the artifact's cache key when it was pinned
    to a stored build, the model version's sha256)."""

    label: str
    model_sha256: str
    artifact_key: str | None = None
    # Per metric (median_ms, load_ms, peak_rss_kb), one value per block, in run order.
    blocks: dict[str, list[float]] = Field(default_factory=dict)


class ExperimentDifference(Record):
    """Treatment against control for one metric, from the paired blocks
    (:func:`harness.regression.difference.paired_difference`)."""

    ratio: float
    ratio_low: float
    ratio_high: float
    pvalue: float
    effect_size: float
    n_control: int
    n_treatment: int
    test: str
    verdict: Literal["slower", "faster", "same", "inconclusive"]


class ExperimentRecord(Record):
    """An interleaved A/B experiment's record (the run's ``experiment``): its arms, how many
    pairs of blocks ran, and per metric the paired difference (absent for a metric with too
    few usable blocks)."""

    control: ExperimentArm
    treatment: ExperimentArm
    blocks: int
    min_effect: float
    alpha: float
    differences: dict[str, ExperimentDifference] = Field(default_factory=dict)


class ResultDocument(Record):
    """One measurement's result document (see the module doc for absent vs null)."""

    model: ModelDescription
    # Left to right: a device's facts when it could be asked, else what names it.
    device: DeviceFacts | DeviceRef = Field(union_mode="left_to_right")
    backend: str
    status: Status = "failed"  # ok only once the outputs matched the reference
    error: ResultError | None = None
    latency_ms: LatencyStats | None = None
    load_ms: float | None = None
    first_ms: float | None = None
    peak_rss_kb: int | None = None
    accuracy: Accuracy | None = None
    samples_ms: list[float] = Field(default_factory=list)
    provenance: Provenance
    partition: PartitionReport | MISSING = MISSING  # offloading backends (tvm-nnapi, ...)
    state_before: StateSnapshot | MISSING = MISSING
    cooldown: Cooldown | MISSING = MISSING
    state_after: StateSnapshot | MISSING = MISSING  # when the runner ended by itself
    profile: list[OpProfile] | MISSING = MISSING  # with --profile: costliest first
    wall_ms: float | MISSING = MISSING  # edgefarm bench: the whole measurement
    experiment: ExperimentRecord | MISSING = MISSING  # an A/B run (edgefarm ab, confirmation)
    # True when the device ran the program under an instruction-set emulator (the arm64
    # emulated phone's qemu-user): its latencies are the emulator's, not a phone's speed.
    isa_emulated: bool | MISSING = MISSING

    @property
    def device_id(self) -> str:
        return self.device.id

    @property
    def facts(self) -> DeviceFacts:
        """The device's facts; what is not known of a device only named takes the defaults."""
        if isinstance(self.device, DeviceFacts):
            return self.device
        return DeviceFacts.from_dict(self.device.model_dump())

    def dump(self) -> dict[str, JsonValue]:
        """The document as JSON data: what is stored and written."""
        dumped: dict[str, JsonValue] = self.model_dump(mode="json")
        return dumped


def documents_json(documents: Sequence[ResultDocument]) -> str:
    """What ``--json`` writes: a list of the documents' dumps."""
    return json.dumps([doc.dump() for doc in documents], indent=2) + "\n"


RESULT_KEYS = tuple(
    name for name, field in ResultDocument.model_fields.items() if field.default is not MISSING
)
"""The top-level names every result document has (the others are there when written)."""

DeviceRecord = DeviceFacts | DeviceRef
_DEVICE: TypeAdapter[DeviceRecord] = TypeAdapter(
    Annotated[DeviceRecord, Field(union_mode="left_to_right")]
)


def device_record(given: DeviceRecord | Mapping[str, object] | str) -> DeviceRecord:
    """A document's ``device``: a device's facts, or what names a device that could not be
    asked (an address, or a registered row's partial facts)."""
    if isinstance(given, DeviceFacts | DeviceRef):
        return given
    if isinstance(given, str):
        return DeviceRef(id=given)
    return _DEVICE.validate_python(dict(given))
