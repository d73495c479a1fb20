"""The result document of a measurement: its shape, and what each step writes into it.

Its top-level names (:data:`RESULT_KEYS`) are stable: the API, the web pages and users build
on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.compile import tvm_version
from harness.errors import EdgefarmError, InfrastructureError, JobError, Stage
from harness.measure.accuracy import compare
from harness.measure.device_run import RunFailed, RunOk
from harness.measure.stats import summarize
from harness.modelio import PreparedModel
from harness.runner.result import RunnerOk

RESULT_KEYS = (
    "model",
    "device",
    "backend",
    "status",
    "error",
    "latency_ms",
    "load_ms",
    "first_ms",
    "peak_rss_kb",
    "accuracy",
    "samples_ms",
    "provenance",
)


def base_document(
    model: PreparedModel | None,
    model_path: Path | None,
    device: str | dict[str, Any],
    backend: str,
) -> dict[str, Any]:
    """A document with nothing measured yet (``failed`` until the comparison passes)."""
    if model is not None:
        model_doc = model.describe()
    else:
        name = model_path.stem if model_path else "?"
        model_doc = {"name": name, "sha256": None, "format": None, "inputs": []}
    device_doc = device if isinstance(device, dict) else {"id": device}
    return {
        "model": model_doc,
        "device": device_doc,
        "backend": backend,
        "status": "failed",
        "error": None,
        "latency_ms": None,
        "load_ms": None,
        "first_ms": None,
        "peak_rss_kb": None,
        "accuracy": None,
        "samples_ms": [],
        "provenance": {"edgefarm_version": __version__, "tvm_version": tvm_version()},
    }


def fail(doc: dict[str, Any], error: EdgefarmError) -> dict[str, Any]:
    """``doc`` failed with ``error``'s stage and message; a failure of the farm, not of the
    user's input, is marked ``retryable`` (a farm worker retries such a measurement)."""
    doc["status"] = "failed"
    doc["error"] = {"stage": stage_of(error), "message": error.message}
    if isinstance(error, InfrastructureError):
        doc["error"]["retryable"] = True
    return doc


def failed_document(
    *,
    model: PreparedModel | None,
    model_path: Path | None,
    device: str | dict[str, Any],
    backend: str,
    error: EdgefarmError,
) -> dict[str, Any]:
    """A ``failed`` result document for a measurement that never got to run."""
    doc = base_document(model, model_path, device, backend)
    doc["status"] = "failed"
    doc["error"] = {"stage": stage_of(error), "message": error.message}
    return doc


def stage_of(error: EdgefarmError) -> Stage:
    if isinstance(error, JobError):
        return error.stage
    if isinstance(error, InfrastructureError):
        return error.stage or "run"
    return "run"


def record_run(doc: dict[str, Any], outcome: RunOk | RunFailed) -> RunOk:
    """What the run on the device did, into ``doc``: the runtime bundle, the device's state
    around the run, the runner's timings; raises the failure's error."""
    if outcome.runtime_bundle is not None:
        doc["provenance"]["runtime_bundle"] = outcome.runtime_bundle
    if outcome.state is not None:
        doc["state_before"] = outcome.state.before
        doc["cooldown"] = outcome.state.cooldown
        if outcome.state.after is not None:
            doc["state_after"] = outcome.state.after
    if isinstance(outcome.report, RunnerOk):
        _record_report(doc, outcome.report)
    if isinstance(outcome, RunFailed):
        raise outcome.error
    return outcome


def _record_report(doc: dict[str, Any], report: RunnerOk) -> None:
    doc["provenance"]["runner_version"] = report.runner_version
    stats = summarize(report.samples_ms)
    doc.update(
        {
            "latency_ms": stats.to_dict(),
            "load_ms": report.load_ms,
            "first_ms": report.first_ms,
            "peak_rss_kb": report.peak_rss_kb,
            "samples_ms": list(report.samples_ms),
        }
    )
    if "predicted_ms" in doc.get("partition", {}):
        # The cost model's prediction beside what this run measured.
        doc["partition"]["measured_ms"] = stats.median
    if report.profile is not None:
        doc["profile"] = sorted(
            (p.model_dump() for p in report.profile),
            key=lambda p: -float(p["total_ms"]),
        )


def record_comparison(
    doc: dict[str, Any],
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
    doc["accuracy"] = accuracy.to_dict()
    if not accuracy.passed:
        raise JobError(
            "compare",
            f"outputs differ from {reference_name} beyond tolerance (max abs err "
            f"{accuracy.max_abs_err:.3g}, cosine {accuracy.cosine:.6f})",
        )
    doc["status"] = "ok"
