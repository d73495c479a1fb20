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

from harness.backends import Backend
from harness.bench.measurement import Measurement, make_model_inputs
from harness.devices import Device
from harness.errors import InfrastructureError, JobError
from harness.measure.document import ResultDocument
from harness.measure.protocol import Protocol
from harness.modelio import PreparedModel
from harness.regression import MAX_BLOCKS
from harness.regression.difference import Difference, paired_difference, sample_difference


@dataclass(frozen=True)
class Arm:
    """One side: a model, the backend it runs with and the backend's options."""

    label: str
    model: PreparedModel
    backend: Backend
    options: dict[str, Any] | None = None


@dataclass
class Experiment:
    """What the blocks measured, and what it means."""

    control: Arm
    treatment: Arm
    control_ms: list[float] = field(default_factory=list)  # block medians, in run order
    treatment_ms: list[float] = field(default_factory=list)
    control_samples: list[float] = field(default_factory=list)
    treatment_samples: list[float] = field(default_factory=list)
    paired: Difference | None = None
    pooled: Difference | None = None
    documents: dict[str, ResultDocument] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control.label,
            "treatment": self.treatment.label,
            "blocks": len(self.control_ms),
            "control_ms": self.control_ms,
            "treatment_ms": self.treatment_ms,
            "paired": self.paired.to_dict() if self.paired else None,
            "pooled": self.pooled.to_dict() if self.pooled else None,
        }


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
    progress: Callable[[str, str], None] = _quiet,
) -> Experiment:
    """Run ``blocks`` pairs of control and treatment on ``device``. A JobError or
    InfrastructureError when either side cannot be prepared or a block fails: an experiment
    with a failed block says nothing."""
    if not 2 <= blocks <= MAX_BLOCKS:
        raise JobError("run", f"blocks must be 2 to {MAX_BLOCKS}, not {blocks}")
    facts = device.facts().to_dict()
    arms = (control, treatment)
    measurements = [
        Measurement(
            arm.model, arm.backend, facts, protocol=protocol, options=arm.options, progress=progress
        )
        for arm in arms
    ]
    inputs = []
    for arm, measurement in zip(arms, measurements, strict=True):
        measurement.start()
        measurement.prepare(device=device)
        _raise_failure(arm, measurement)
        inputs.append(make_model_inputs(arm.model, seed=seed))
    experiment = Experiment(control, treatment)
    medians: tuple[list[float], list[float]] = ([], [])
    samples: tuple[list[float], list[float]] = ([], [])
    for block in range(blocks):
        order = (0, 1) if block % 2 == 0 else (1, 0)
        for side in order:
            progress("run", f"block {block + 1}/{blocks}: {arms[side].label}")
            ran = measurements[side].run(device, inputs[side])
            if ran is None:
                _raise_failure(arms[side], measurements[side])
                raise JobError("run", f"{arms[side].label}: the block did not run")
            medians[side].append(statistics.median(ran.report.samples_ms))
            samples[side].extend(ran.report.samples_ms)
    experiment.control_ms, experiment.treatment_ms = medians
    experiment.control_samples, experiment.treatment_samples = samples
    experiment.paired = paired_difference(
        medians[0], medians[1], alpha=alpha, min_effect=min_effect
    )
    experiment.pooled = sample_difference(
        samples[0], samples[1], alpha=alpha, min_effect=min_effect
    )
    experiment.documents = {arm.label: m.doc for arm, m in zip(arms, measurements, strict=True)}
    return experiment


def _raise_failure(arm: Arm, measurement: Measurement) -> None:
    error = measurement.doc.error
    if error is None:
        return
    message = f"{arm.label}: {error.message}"
    if getattr(error, "retryable", False) is True:
        raise InfrastructureError(message, stage=error.stage)
    raise JobError(error.stage, message)
