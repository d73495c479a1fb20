"""``tvm-nnapi`` and ``tvm-neuron``: TVM Relax with subgraphs offloaded to an NNAPI-family
accelerator (:mod:`harness.byoc`), run by the native runner.

What they add to a TVM build: the version of the BYOC code in their options (so a changed
codegen never reuses an old artifact), the phone's NNAPI feature level as a bound, and
``partition: cost``, for which the device's class is calibrated first (its measured costs
decide what is offloaded). What stays on the CPU is built as tvm-cpu builds: with the device
class's tuning records applied after the partition (option ``tuning``), for the TIR functions
of the CPU part that records cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.backends.base import JobBuild, Prepared, Target
from harness.backends.tvm_cpu import TvmBackend, run_choices
from harness.byoc.costmodel import costs_json
from harness.byoc.report import CalibrationReport
from harness.compile import Lowering
from harness.config import get_settings
from harness.db.costs import local_store
from harness.db.session import scoped
from harness.devices.base import DeviceFacts
from harness.errors import EdgefarmError, HarnessBug, JobError
from harness.jsontypes import BackendOptions, JsonValue, json_int
from harness.measure.accuracy import FirstDivergence
from harness.measure.calibration import measured_costs
from harness.measure.device_run import NativeRunner
from harness.modelio import PreparedModel

if TYPE_CHECKING:
    from harness.compile.tuned import AppliedRecords
    from harness.db.session import SessionScope


@dataclass(frozen=True)
class ByocBackend(TvmBackend):
    """TVM Relax with subgraphs offloaded through ``dialect`` (``nnapi`` or ``neuron``)."""

    dialect: str = "nnapi"

    def offloads(self) -> bool:
        return True

    def resolve_options(self, given: BackendOptions | None) -> BackendOptions:
        """As for every backend, plus the version of the BYOC code: the options are part of
        the artifact cache key, so a changed codegen or driver never reuses an old artifact."""
        from harness.byoc.link import byoc_version

        # A version recorded in earlier resolved options is replaced, never trusted.
        user = {k: v for k, v in (given or {}).items() if k != "byoc_version"}
        return {**super().resolve_options(user), "byoc_version": byoc_version()}

    def device_options(
        self, facts: DeviceFacts, options: BackendOptions | None
    ) -> BackendOptions | None:
        """A phone's NNAPI feature level bounds what tvm-nnapi may offload; a phone without
        NNAPI (SDK level below 27) is refused. This machine runs the reference driver.

        The default ``feature_level`` (NNAPI's highest) stands for "the highest the device
        supports": the farm stores a job's options with the defaults filled in, so a default
        is all a job that named no level carries to an older phone. A lower level given is a
        ceiling the device must reach."""
        if self.dialect != "nnapi" or not facts.android_nnapi:
            return options
        level = facts.nnapi_feature_level
        if level is None:
            raise JobError(
                "partition",
                f"{facts.id or 'the device'} runs Android SDK level {facts.sdk_level}, which has "
                "no NNAPI (NNAPI needs SDK level 27 or newer); use tvm-cpu on it",
            )
        resolved = dict(options or {})
        given = resolved.get("feature_level")
        if given is None or given == self.default_options.get("feature_level"):
            given = min(level, level if given is None else _feature_level(given))
            resolved["feature_level"] = given
        if _feature_level(given) > level:
            raise JobError(
                "partition",
                f"feature_level {given} is above what {facts.id} supports ({level}, "
                f"Android SDK level {facts.sdk_level})",
            )
        return resolved

    def first_divergence(
        self, model: PreparedModel, prepared: Prepared, inputs: tuple[np.ndarray, ...]
    ) -> FirstDivergence | None:
        """The first offloaded subgraph whose outputs differ from its CPU build's, found on
        this host's build of the same options (the artifact that ran, for a host target; a
        phone's artifact has a host twin built, or found in the cache)."""
        from harness.measure.divergence import first_divergence

        program = prepared.program
        if not isinstance(program, NativeRunner):
            raise HarnessBug(f"{self.name} prepared a {type(program).__name__}")
        artifact = program.artifact
        options = artifact.manifest["options"]
        if artifact.manifest["target"] != "host":
            try:
                artifact = self.compile(model, target="host", options=options)
            except EdgefarmError as exc:
                return FirstDivergence(
                    status="failed",
                    message=f"the host build to locate it in failed: {exc.message}",
                )
        return first_divergence(
            model,
            dialect=self.dialect,
            library=artifact.library,
            options=options,
            inputs=inputs,
            timeout_s=get_settings().compile_timeout_s,
        )

    def job_builds(self, options: BackendOptions) -> list[JobBuild]:
        """``partition: cost``: the run's artifact depends on the costs measured on its
        phone's class, which the run finds or measures; what can be built now is the pair of
        calibration builds, so that a broken model fails here, for every run at once."""
        if options.get("partition") != "cost":
            return super().job_builds(options)
        return [
            JobBuild({**options, "partition": mode}, for_run=False)
            for mode in ("calibrate-cpu", "calibrate-accel")
        ]

    def needs_device(self, options: BackendOptions | None) -> bool:
        return (options or {}).get("partition") == "cost"

    def records_for(
        self,
        options: BackendOptions | None,
        facts: DeviceFacts,
        sessions: SessionScope,
        *,
        model: PreparedModel,
    ) -> AppliedRecords | None:
        """As for tvm-cpu, on the CPU part of the partitioned model. ``partition: cost``
        before calibration has no CPU part yet (the costs decide it), and its calibration
        builds are untuned: the run's preparation finds the records once the costs are in
        its options."""
        if self.needs_device(options) and (options or {}).get("costs") is None:
            return None
        return super().records_for(options, facts, sessions, model=model)

    def build_options(
        self, model: PreparedModel, options: BackendOptions | None, where: Target
    ) -> tuple[BackendOptions | None, CalibrationReport | None]:
        """The device's NNAPI feature level bounds what may be offloaded; ``partition:
        cost`` takes the per-candidate costs of the device's class: stored, or measured now
        on it."""
        options = self.device_options(where.facts, options)
        if not self.needs_device(options):
            return options, None
        if where.device is None:
            raise HarnessBug(f"{self.name} with partition cost needs the device to calibrate")
        # Calibration times untuned builds: ``tuning`` chooses the records of the run's
        # build, it is no option of the calibration builds (nor part of their keys).
        # ``threads`` is the CPU side's pool while it is timed (and its costs' variant).
        _, threads, build = run_choices(options)
        costs, calibration = measured_costs(
            model,
            where.device,
            self,
            dialect=self.dialect,
            target=where.target,
            options=build or {},
            threads=threads,
            facts=where.facts,
            sessions=where.cost_sessions or scoped(local_store()),
            limits=where.limits,
            progress=where.progress,
        )
        return {**(options or {}), "costs": costs_json(costs)}, calibration


def _feature_level(given: JsonValue) -> int:
    return json_int(given, what="feature_level", stage="partition")


_BYOC_OPTIONS: BackendOptions = {
    "opt_level": 3,
    "preference": "fast_single_answer",
    "partition": "all",
    # partition "cost": the measured costs the decision uses (filled in by calibration).
    "costs": None,
}

NNAPI = ByocBackend(
    "tvm-nnapi",
    "TVM Relax, subgraphs offloaded through Android NNAPI (TVM's NNAPI pattern table with "
    "edgefarm's additions)",
    default_options={**_BYOC_OPTIONS, "feature_level": 7},
    lowering=Lowering("nnapi"),
    dialect="nnapi",
    tunable=True,
)

NEURON = ByocBackend(
    "tvm-neuron",
    "TVM Relax, subgraphs offloaded through MediaTek's Neuron Adapter API",
    default_options={**_BYOC_OPTIONS, "neuron_lib": None, "neuron_include": None},
    lowering=Lowering("neuron"),
    dialect="neuron",
    tunable=True,
)
