"""What each step of a measurement writes into its result document
(:class:`harness.measure.document.ResultDocument`: the type, its stable names, absent vs null).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import MISSING

from harness import __version__
from harness.compile import tvm_version
from harness.errors import EdgefarmError, InfrastructureError, JobError, Stage
from harness.measure.accuracy import compare
from harness.measure.device_run import RunFailed, RunOk
from harness.measure.document import RESULT_KEYS as RESULT_KEYS  # re-exported
from harness.measure.document import (
    DeviceRecord,
    Provenance,
    ResultDocument,
    ResultError,
    device_record,
)
from harness.measure.stats import summarize
from harness.modelio import ModelDescription, PreparedModel
from harness.runner.result import RunnerOk


def base_document(
    model: PreparedModel | None,
    model_path: Path | None,
    device: DeviceRecord | Mapping[str, object] | str,
    backend: str,
) -> ResultDocument:
    """A document with nothing measured yet (``failed`` until the comparison passes)."""
    if model is not None:
        description = model.description()
    else:
        name = model_path.stem if model_path else "?"
        description = ModelDescription(name=name, sha256=None, format=None, inputs=[])
    doc = ResultDocument(
        model=description,
        device=device_record(device),
        backend=backend,
        provenance=Provenance(edgefarm_version=__version__, tvm_version=tvm_version()),
    )
    if doc.facts.isa_emulated:
        doc.isa_emulated = True
    return doc


def fail(doc: ResultDocument, error: EdgefarmError) -> ResultDocument:
    """``doc`` failed with ``error``'s stage and message; a failure of the farm, not of the
    user's input, is marked ``retryable`` (a farm worker retries such a measurement)."""
    doc.status = "failed"
    doc.error = ResultError(stage=stage_of(error), message=error.message)
    if isinstance(error, InfrastructureError):
        doc.error.retryable = True
    return doc


def failed_document(
    *,
    model: PreparedModel | None,
    model_path: Path | None,
    device: DeviceRecord | Mapping[str, object] | str,
    backend: str,
    error: EdgefarmError,
) -> ResultDocument:
    """A ``failed`` result document for a measurement that never got to run."""
    doc = base_document(model, model_path, device, backend)
    doc.error = ResultError(stage=stage_of(error), message=error.message)
    return doc


def stage_of(error: EdgefarmError) -> Stage:
    if isinstance(error, JobError):
        return error.stage
    if isinstance(error, InfrastructureError):
        return error.stage or "run"
    return "run"


def record_run(doc: ResultDocument, outcome: RunOk | RunFailed) -> RunOk:
    """What the run on the device did, into ``doc``: the runtime bundle, the device's state
    around the run, the runner's timings; raises the failure's error."""
    if outcome.runtime_bundle is not None:
        doc.provenance.runtime_bundle = outcome.runtime_bundle
    if outcome.state is not None:
        doc.state_before = outcome.state.before
        doc.cooldown = outcome.state.cooldown
        if outcome.state.after is not None:
            doc.state_after = outcome.state.after
    if isinstance(outcome.report, RunnerOk):
        _record_report(doc, outcome.report)
    if isinstance(outcome, RunFailed):
        raise outcome.error
    return outcome


def _record_report(doc: ResultDocument, report: RunnerOk) -> None:
    doc.provenance.runner_version = report.runner_version
    if report.threads:
        doc.provenance.threads = report.threads
    stats = summarize(report.samples_ms)
    doc.latency_ms = stats
    doc.load_ms = report.load_ms
    doc.first_ms = report.first_ms
    doc.peak_rss_kb = report.peak_rss_kb
    doc.samples_ms = list(report.samples_ms)
    if doc.partition is not MISSING and "predicted_ms" in doc.partition:
        # The cost model's prediction beside what this run measured.
        doc.partition["measured_ms"] = stats.median
    if report.profile is not None:
        doc.profile = sorted(report.profile, key=lambda p: -p.total_ms)


def record_comparison(
    doc: ResultDocument,
    outputs: Sequence[np.ndarray],
    reference_name: str,
    reference: Sequence[np.ndarray] | None,
    why_none: str | None,
) -> None:
    """The outputs against the reference's, into ``doc``: ``ok`` when within tolerance;
    a JobError (stage compare) otherwise."""
    if reference is None:
        raise JobError("compare", f"no reference outputs: {why_none}")
    accuracy = compare(list(outputs), list(reference), reference_name=reference_name)
    doc.accuracy = accuracy
    if not accuracy.passed:
        raise JobError(
            "compare",
            f"outputs differ from {reference_name} beyond tolerance (max abs err "
            f"{accuracy.max_abs_err:.3g}, cosine {accuracy.cosine:.6f})",
        )
    doc.status = "ok"
