"""An A/B experiment on one device: control and treatment measured in interleaved blocks.

Both are prepared first (compiled or found in the cache); then the device runs them in
alternating blocks, A B B A A B ... (each pair's order alternates, so that neither always
runs on the warmer phone), each block a full measurement by the measurement protocol. Each
adjacent pair of block medians gives one log-ratio; :func:`~harness.regression.difference.
paired_difference` turns them into the ratio, its interval and a verdict. The phone's own
drift over the experiment (heat, a governor, other load) hits both sides of a pair alike and
cancels — the reason MobileLab-style experiments see differences far smaller than nightly
medians can.

Used by ``edgefarm ab`` and, on the farm, by the confirmation of a suspected regression.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.backends import Backend
from harness.backends.pinned import PinnedBuild
from harness.bench.measurement import Measurement, make_model_inputs
from harness.devices import Device
from harness.errors import HarnessBug, InfrastructureError, JobError
from harness.measure.document import (
    ExperimentArm,
    ExperimentDifference,
    ExperimentRecord,
    ResultDocument,
)
from harness.measure.protocol import Protocol
from harness.modelio import PreparedModel
from harness.regression import MAX_BLOCKS
from harness.regression.difference import Difference, paired_difference, sample_difference


@dataclass(frozen=True)
class Arm:
    """One side: a model, the backend it runs with and the backend's options; or, with
    ``artifact_key``, that stored build of the model (:class:`~harness.backends.pinned.
    PinnedBuild`), as it was built, whatever today's toolchain would build."""

    label: str
    model: PreparedModel
    backend: Backend
    options: dict[str, Any] | None = None
    artifact_key: str | None = None

    def runs_with(self) -> Backend:
        """The backend that prepares this arm: ``backend``, or its stored artifact."""
        if self.artifact_key is None:
            return self.backend
        return PinnedBuild.of(self.backend, self.artifact_key)


@dataclass
class Experiment:
    """What the blocks measured, and what it means."""

    control: Arm
    treatment: Arm
    control_ms: list[float] = field(default_factory=list)  # block medians, in run order
    treatment_ms: list[float] = field(default_factory=list)
    control_samples: list[float] = field(default_factory=list)
    treatment_samples: list[float] = field(default_factory=list)
    paired: Difference | None = None  # of the block medians (latency)
    pooled: Difference | None = None
    documents: dict[str, ResultDocument] = field(default_factory=dict)
    measurements: dict[str, Measurement] = field(default_factory=dict)  # by arm label
    # Per metric (BLOCK_METRICS), each side's value per block and the paired difference.
    control_blocks: dict[str, list[float]] = field(default_factory=dict)
    treatment_blocks: dict[str, list[float]] = field(default_factory=dict)
    differences: dict[str, Difference] = field(default_factory=dict)
    min_effect: float = 0.01
    alpha: float = 0.01

    def record(self) -> ExperimentRecord:
        """The experiment as a result document's ``experiment``."""

        def arm(side: Arm, blocks: dict[str, list[float]]) -> ExperimentArm:
            return ExperimentArm(
                label=side.label,
                model_sha256=side.model.file.sha256,
                artifact_key=side.artifact_key,
                blocks=blocks,
            )

        return ExperimentRecord(
            control=arm(self.control, self.control_blocks),
            treatment=arm(self.treatment, self.treatment_blocks),
            blocks=len(self.control_ms),
            min_effect=self.min_effect,
            alpha=self.alpha,
            differences={
                metric: ExperimentDifference.model_validate(d.to_dict())
                for metric, d in self.differences.items()
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control.label,
            "treatment": self.treatment.label,
            "blocks": len(self.control_ms),
            "control_ms": self.control_ms,
            "treatment_ms": self.treatment_ms,
            "paired": self.paired.to_dict() if self.paired else None,
            "pooled": self.pooled.to_dict() if self.pooled else None,
            "differences": {m: d.to_dict() for m, d in self.differences.items()},
        }


# What each block yields, per side: the median of its samples and their 10th percentile (a
# burst of other work on the phone's cores lifts the upper samples of a block first, so the
# lower quantile is the steadier measure of the code's own speed), the model's load time and
# the runner's peak RSS. Each is compared pair by pair (a load time or a peak RSS moves with
# the phone's state as latency does).
BLOCK_METRICS = ("median_ms", "p10_ms", "load_ms", "peak_rss_kb")


def _quiet(event: str, message: str) -> None:
    pass


def interleaved(
    device: Device,
    control: Arm,
    treatment: Arm,
    *,
    blocks: int,
    protocol: Protocol,
    seed: int = 0,
    min_effect: float = 0.01,
    alpha: float = 0.01,
    exclusive: bool = False,
    progress: Callable[[str, str], None] = _quiet,
) -> Experiment:
    """Run ``blocks`` pairs of control and treatment on ``device``. A JobError or
    InfrastructureError when either side cannot be prepared or a block fails: an experiment
    with a failed block says nothing. ``exclusive``: the caller owns the device (a farm's
    lease), so runners left over from interrupted runs are ended first."""
    if not 2 <= blocks <= MAX_BLOCKS:
        raise JobError("run", f"blocks must be 2 to {MAX_BLOCKS}, not {blocks}")
    if control.label == treatment.label:
        raise HarnessBug(f"both arms are labelled {control.label!r}")
    facts = device.facts().to_dict()
    arms = (control, treatment)
    measurements = [
        Measurement(
            arm.model,
            arm.runs_with(),
            facts,
            protocol=protocol,
            options=arm.options,
            progress=progress,
        )
        for arm in arms
    ]
    if exclusive:
        ended = device.reset()
        if ended:
            progress("run", f"ended leftover runner(s) {ended}")
    inputs = []
    for arm, measurement in zip(arms, measurements, strict=True):
        measurement.start()
        measurement.prepare(device=device)
        _raise_failure(arm, measurement)
        inputs.append(make_model_inputs(arm.model, seed=seed))
    experiment = Experiment(control, treatment, min_effect=min_effect, alpha=alpha)
    blocks_of: tuple[dict[str, list[float]], dict[str, list[float]]] = (
        {metric: [] for metric in BLOCK_METRICS},
        {metric: [] for metric in BLOCK_METRICS},
    )
    medians = (blocks_of[0]["median_ms"], blocks_of[1]["median_ms"])
    samples: tuple[list[float], list[float]] = ([], [])
    for block in range(blocks):
        order = (0, 1) if block % 2 == 0 else (1, 0)
        for side in order:
            progress("run", f"block {block + 1}/{blocks}: {arms[side].label}")
            ran = measurements[side].run(device, inputs[side])
            if ran is None:
                _raise_failure(arms[side], measurements[side])
                raise JobError("run", f"{arms[side].label}: the block did not run")
            blocks_of[side]["median_ms"].append(statistics.median(ran.report.samples_ms))
            blocks_of[side]["p10_ms"].append(float(np.percentile(ran.report.samples_ms, 10)))
            blocks_of[side]["load_ms"].append(ran.report.load_ms)
            blocks_of[side]["peak_rss_kb"].append(float(ran.report.peak_rss_kb))
            samples[side].extend(ran.report.samples_ms)
    experiment.control_ms, experiment.treatment_ms = list(medians[0]), list(medians[1])
    experiment.control_blocks, experiment.treatment_blocks = blocks_of
    experiment.control_samples, experiment.treatment_samples = samples
    for metric in BLOCK_METRICS:
        a, b = blocks_of[0][metric], blocks_of[1][metric]
        if all(v > 0 for v in a + b):  # a load time may round to 0 ms: no ratio then
            experiment.differences[metric] = paired_difference(
                a, b, alpha=alpha, min_effect=min_effect
            )
    experiment.paired = experiment.differences.get("median_ms")
    experiment.pooled = sample_difference(
        samples[0], samples[1], alpha=alpha, min_effect=min_effect
    )
    experiment.measurements = dict(zip((a.label for a in arms), measurements, strict=True))
    experiment.documents = {label: m.doc for label, m in experiment.measurements.items()}
    return experiment


def _raise_failure(arm: Arm, measurement: Measurement) -> None:
    error = measurement.doc.error
    if error is None:
        return
    message = f"{arm.label}: {error.message}"
    if getattr(error, "retryable", False) is True:
        raise InfrastructureError(message, stage=error.stage)
    raise JobError(error.stage, message)
