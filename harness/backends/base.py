"""What every backend is and does; :mod:`harness.backends` keeps the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from harness.compile import Artifact
from harness.db.session import SessionScope
from harness.devices.base import Device, DeviceFacts
from harness.errors import HarnessBug, JobError
from harness.jsontypes import BackendOptions
from harness.measure.accuracy import FirstDivergence
from harness.measure.device_run import Program, Progress, RunLimits
from harness.measure.document import BuildProvenance
from harness.modelio import PreparedModel
from harness.partition_report import PartitionReport

if TYPE_CHECKING:
    from harness.compile.tuned import AppliedRecords


@dataclass(frozen=True)
class JobBuild:
    """A build a job makes on the compile queue, before its runs go to their phones."""

    options: BackendOptions  # the build's options, resolved
    # The run's own artifact (recorded, and linked to the run); otherwise a build made early
    # so that a model the backend cannot build fails for every run at once.
    for_run: bool = True


@dataclass(frozen=True)
class Target:
    """Where a preparation is for: the device's facts and compile target, and, for a backend
    that measures on the device while preparing (``partition: cost``), the device itself."""

    facts: DeviceFacts
    target: str
    limits: RunLimits
    progress: Progress
    device: Device | None = None
    # Short transactions on the store of measured per-device-class costs (default:
    # ``edgefarm bench``'s local store).
    cost_sessions: SessionScope | None = None


@dataclass(frozen=True)
class Prepared:
    """What a device runs for a backend, and what preparing it adds to the result document:
    entries of its ``provenance``, and the ``partition`` report of an offloading build."""

    program: Program
    provenance: BuildProvenance
    partition: PartitionReport | None = None


@dataclass(frozen=True)
class Backend(ABC):
    """A way to run a model on a device. Names are prefixed by family (``tvm-*``, ``ort``)."""

    name: str
    description: str
    formats: tuple[str, ...] = ("onnx", "tflite", "pt2")
    default_options: BackendOptions = field(default_factory=dict)

    def check_format(self, fmt: str, *, model_name: str) -> None:
        """A JobError (stage import) unless the backend runs ``fmt`` models."""
        if fmt not in self.formats:
            raise JobError(
                "import",
                f"backend {self.name} runs {'/'.join(self.formats)} models; {model_name} is {fmt}",
            )

    def resolve_options(self, given: BackendOptions | None) -> BackendOptions:
        """The backend's defaults overlaid with ``given``; unknown keys are a JobError."""
        options = dict(self.default_options)
        for key, value in (given or {}).items():
            if key not in options:
                known = ", ".join(sorted(options)) or "none"
                raise JobError(
                    "compile", f"backend {self.name} has no option {key!r} (options: {known})"
                )
            options[key] = value
        return options

    def device_options(
        self, facts: DeviceFacts, options: BackendOptions | None
    ) -> BackendOptions | None:
        """``options`` completed (or refused, a JobError) for the device ``facts`` describe."""
        return options

    def offloads(self) -> bool:
        """Whether the backend offloads subgraphs to an accelerator (``--partition``)."""
        return False

    def tunes(self) -> bool:
        """Whether the backend's builds apply tuning records (option ``tuning``,
        ``--tuned/--untuned``)."""
        return False

    def first_divergence(
        self, model: PreparedModel, prepared: Prepared, inputs: tuple[np.ndarray, ...]
    ) -> FirstDivergence | None:
        """Where the outputs of ``prepared``, run on ``inputs``, first went wrong, for a run
        that failed its comparison (``accuracy.first_divergence``); None for a backend that
        offloads nothing. Never raises: what prevents the answer is recorded in it."""
        return None

    def job_builds(self, options: BackendOptions) -> list[JobBuild]:
        """What a job builds for a run with ``options`` (resolved) on the compile queue."""
        return []

    def compile(
        self,
        model: PreparedModel,
        *,
        target: str,
        options: BackendOptions | None,
        tuning: AppliedRecords | None = None,
    ) -> Artifact:
        """The artifact of a :class:`JobBuild`'s ``options`` for ``target`` (applying
        ``tuning``'s records), built at most once. Only a backend that lists job builds is
        asked."""
        raise HarnessBug(f"backend {self.name} builds nothing")

    def artifact_key(
        self,
        model: PreparedModel,
        target: str,
        options: BackendOptions,
        tuning: AppliedRecords | None = None,
    ) -> str:
        """The cache key of :meth:`compile`'s artifact."""
        raise HarnessBug(f"backend {self.name} builds nothing")

    def records_for(
        self,
        options: BackendOptions | None,
        facts: DeviceFacts,
        sessions: SessionScope,
        *,
        model: PreparedModel,
    ) -> AppliedRecords | None:
        """The tuning records a build of ``model`` with ``options`` applies for the device
        ``facts`` describe, read through ``sessions`` (None: untuned, as for every backend
        that does not tune)."""
        return None

    def needs_device(self, options: BackendOptions | None) -> bool:
        """Whether :meth:`prepare` measures on the device (so runs under its lease)."""
        return False

    @abstractmethod
    def prepare(
        self, model: PreparedModel, options: BackendOptions | None, where: Target
    ) -> Prepared:
        """What ``where``'s device runs for ``model`` with ``options``. Raises JobError (the
        user's input) or InfrastructureError (the farm)."""
