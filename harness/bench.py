"""One benchmark: a model measured on devices with backends, as result documents.

:func:`run_bench` is what ``edgefarm bench`` does; :func:`measure` is one (device, backend)
measurement and is what a farm worker runs. Every failure ends its measurement as ``failed``
with a stage and a one-line message; the other measurements still run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.compile import compile_artifact, get_backend, tvm_version
from harness.compile.backends import Backend
from harness.config import get_settings
from harness.db.costs import local_store
from harness.db.session import SessionScope, scoped
from harness.devices import Device, open_device
from harness.errors import EdgefarmError, HarnessBug, InfrastructureError, JobError, Stage
from harness.measure.accuracy import compare
from harness.measure.calibration import measured_costs
from harness.measure.device_run import (
    NativeRunner,
    Program,
    Progress,
    PythonRunner,
    RunFailed,
    RunLimits,
    RunnerCall,
    RunOk,
    run_on_device,
)
from harness.measure.inputs import load_inputs_npz, make_inputs
from harness.measure.protocol import Protocol as Protocol  # re-exported: callers import it here
from harness.measure.stats import summarize
from harness.modelio import InputSpec, PreparedModel, load
from harness.runner.result import RunnerOk

log = logging.getLogger(__name__)

# The result document's top-level names. Stable: the API, the web pages and users build on them.
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


def _quiet(event: str, message: str) -> None:
    log.info("%s: %s", event, message)


@dataclass
class Reference:
    """Reference outputs for a model's inputs, or why there are none."""

    name: str
    outputs: list[np.ndarray] | None = None
    error: str | None = None


@dataclass
class BenchPlan:
    """What ``edgefarm bench`` was asked to do."""

    model_path: Path
    inputs: list[InputSpec] = field(default_factory=list)
    backends: list[str] = field(default_factory=lambda: ["tvm-cpu"])
    devices: list[str] = field(default_factory=lambda: ["local"])
    protocol: Protocol = field(default_factory=Protocol)
    inputs_npz: Path | None = None
    seed: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


def reference_name(model: PreparedModel) -> str:
    return {"onnx": "onnxruntime", "tflite": "litert", "pt2": "pytorch"}[model.format]


def compute_reference(model: PreparedModel, inputs: dict[str, np.ndarray]) -> Reference:
    """Run the model's own framework on ``inputs``: the numerical reference."""
    from harness.measure.reference import onnx_reference, tflite_reference

    name = reference_name(model)
    try:
        if model.format == "onnx":
            outputs = onnx_reference(model.file.data, inputs)
        elif model.format == "tflite":
            outputs = tflite_reference(model.file.data, inputs)
        else:
            from harness.modelio.torch_io import run_reference

            outputs = run_reference(model.graph, [inputs[s.name] for s in model.inputs])
    except EdgefarmError as exc:
        return Reference(name, error=exc.message)
    return Reference(name, outputs=[np.asarray(o) for o in outputs])


def make_model_inputs(
    model: PreparedModel, *, seed: int, npz: Path | None = None
) -> dict[str, np.ndarray]:
    specs = [(s.name, s.static_shape(), s.dtype) for s in model.inputs]
    if npz is not None:
        return load_inputs_npz(npz, specs)
    return make_inputs(specs, seed)


def _base_document(
    model: PreparedModel | None,
    model_path: Path | None,
    device: str | dict[str, Any],
    backend: str,
) -> dict[str, Any]:
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


def _fail(doc: dict[str, Any], stage: Stage | str, message: str) -> dict[str, Any]:
    doc["status"] = "failed"
    doc["error"] = {"stage": stage, "message": message}
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
    doc = _base_document(model, model_path, device, backend)
    return _fail(doc, _stage_of(error), error.message)


def _stage_of(error: EdgefarmError) -> str:
    if isinstance(error, JobError):
        return error.stage
    if isinstance(error, InfrastructureError):
        return error.stage or "run"
    return "run"


def run_limits() -> RunLimits:
    """What a run on a device is held to, from the settings."""
    settings = get_settings()
    return RunLimits(
        run_timeout_s=settings.run_timeout_s,
        cooldown_max_temp_c=settings.cooldown_max_temp_c,
        cooldown_max_wait_s=settings.cooldown_max_wait_s,
    )


def measure(
    model: PreparedModel,
    device: Device,
    backend: Backend,
    *,
    inputs: dict[str, np.ndarray],
    reference: Reference,
    protocol: Protocol,
    options: dict[str, Any] | None = None,
    progress: Progress = _quiet,
    device_facts: dict[str, Any] | None = None,
    exclusive: bool = False,
    cost_sessions: SessionScope | None = None,
) -> dict[str, Any]:
    """Measure ``model`` with ``backend`` on ``device``; always returns a result document.

    ``exclusive``: the caller owns the device (a farm worker holding its lease), so runners
    left over from interrupted runs are ended first and cannot overlap this measurement.
    ``cost_sessions``: short transactions on the store where ``partition: cost`` finds and
    keeps per-device-class costs (default: ``edgefarm bench``'s,
    :func:`harness.db.costs.local_store`).

    Raises only HarnessBug (our defect); every JobError and InfrastructureError becomes a
    ``failed`` document with its stage.
    """
    doc = _base_document(model, None, device_facts or {"id": device.id}, backend.name)
    try:
        if device_facts is None:
            doc["device"] = device.facts().to_dict()
        target = str(doc["device"].get("target") or device.facts().target)
        if exclusive:
            ended = device.reset()
            if ended:
                log.warning("%s: ended leftover runner(s) %s", device.id, ended)
        backend.check_format(model.format, model_name=model.name)
        doc["provenance"]["target"] = target
        doc["provenance"]["protocol"] = protocol.to_dict()
        if backend.kind == "tvm":
            program: Program = _compiled(
                doc, model, device, backend, target, options, progress, cost_sessions
            )
        else:
            program = _framework_runner(doc, model, device, backend, options)
        call = RunnerCall(
            program,
            tuple(inputs[spec.name] for spec in model.inputs),
            protocol,
            outputs=True,
            label=backend.name,
        )
        ran = _record_run(doc, run_on_device(device, call, limits=run_limits(), progress=progress))
        _compare(doc, ran.outputs, reference, f"{backend.name} on {device.id}", progress)
    except EdgefarmError as exc:
        if isinstance(exc, HarnessBug):
            raise
        _fail(doc, _stage_of(exc), exc.message)
        if isinstance(exc, InfrastructureError):
            # The farm failed, not the user's input: a farm worker retries such a measurement.
            doc["error"]["retryable"] = True
    return doc


def _compiled(
    doc: dict[str, Any],
    model: PreparedModel,
    device: Device,
    backend: Backend,
    target: str,
    options: dict[str, Any] | None,
    progress: Progress,
    cost_sessions: SessionScope | None,
) -> NativeRunner:
    """The model compiled for ``target`` (calibrated on ``device`` first for ``partition:
    cost``), as the native runner runs it; its provenance and partition report recorded."""
    progress("compile", f"compiling {model.name} for {backend.name}/{target}")
    # BYOC: the device's NNAPI feature level bounds what may be offloaded.
    options = backend.device_options(doc["device"], options)
    calibration = None
    if (options or {}).get("partition") == "cost":
        # Per-candidate costs of this device class: stored, or measured now on it.
        costs, calibration = measured_costs(
            model,
            device,
            backend,
            target=target,
            options=options or {},
            facts=doc["device"],
            sessions=cost_sessions or scoped(local_store()),
            limits=run_limits(),
            progress=progress,
        )
        options = {**(options or {}), "costs": costs}
    artifact = compile_artifact(model, backend, target=target, options=options)
    partition = artifact.manifest.get("extra", {}).get("partition")
    if partition is not None:
        doc["partition"] = partition
        if calibration is not None and "cost" in partition:
            partition["cost"]["calibration"] = calibration
    doc["provenance"].update(
        {
            "compile_options": artifact.manifest["options"],
            "artifact_key": artifact.key,
            "compile_ms": artifact.compile_ms,
            "cache_hit": artifact.cache_hit,
            "library_bytes": artifact.manifest["sizes"]["library_bytes"],
        }
    )
    return NativeRunner(artifact)


def _framework_runner(
    doc: dict[str, Any],
    model: PreparedModel,
    device: Device,
    backend: Backend,
    options: dict[str, Any] | None,
) -> PythonRunner:
    """The framework's own runtime (onnxruntime) on the model file; its provenance recorded."""
    if facts_kind(device) != "local":
        raise JobError(
            "run",
            f"the {backend.name} baseline runs on the local device only (phones have no "
            f"Python); use a tvm-* backend on {device.id}",
        )
    import onnxruntime

    resolved = backend.resolve_options(options)
    doc["provenance"].update(
        {"compile_options": resolved, "onnxruntime_version": onnxruntime.__version__}
    )
    args = (
        "--threads",
        str(int(resolved["threads"])),
        "--graph-optimization",
        str(resolved["graph_optimization"]),
    )
    return PythonRunner("harness.runner.ort_runner", model.file, args)


def _record_run(doc: dict[str, Any], outcome: RunOk | RunFailed) -> RunOk:
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


def _compare(
    doc: dict[str, Any],
    outputs: Sequence[np.ndarray],
    reference: Reference,
    label: str,
    progress: Progress,
) -> None:
    """The outputs against the reference's: ``ok`` when within tolerance."""
    progress("compare", f"comparing {label} with {reference.name}")
    if reference.outputs is None:
        raise JobError("compare", f"no reference outputs: {reference.error}")
    accuracy = compare(list(outputs), reference.outputs, reference_name=reference.name)
    doc["accuracy"] = accuracy.to_dict()
    if not accuracy.passed:
        raise JobError(
            "compare",
            f"outputs differ from {reference.name} beyond tolerance (max abs err "
            f"{accuracy.max_abs_err:.3g}, cosine {accuracy.cosine:.6f})",
        )
    doc["status"] = "ok"


def facts_kind(device: Device) -> str:
    return device.facts().kind


def run_bench(plan: BenchPlan, progress: Progress = _quiet) -> list[dict[str, Any]]:
    """Every requested (device, backend) measurement, in order; one document each."""
    backends: list[Backend | EdgefarmError] = []
    for name in plan.backends:
        try:
            backends.append(get_backend(name))
        except JobError as exc:
            backends.append(exc)

    progress("import", f"reading {plan.model_path.name}")
    try:
        model = load(plan.model_path, plan.inputs)
        inputs = make_model_inputs(model, seed=plan.seed, npz=plan.inputs_npz)
    except JobError as exc:
        return [
            failed_document(model=None, model_path=plan.model_path, device=d, backend=b, error=exc)
            for d in plan.devices
            for b in plan.backends
        ]
    progress("reference", f"computing reference outputs with {reference_name(model)}")
    reference = compute_reference(model, inputs)

    documents: list[dict[str, Any]] = []
    for address in plan.devices:
        try:
            device = open_device(address)
        except EdgefarmError as exc:
            documents += [
                failed_document(
                    model=model, model_path=plan.model_path, device=address, backend=b, error=exc
                )
                for b in plan.backends
            ]
            continue
        try:
            facts = device.facts().to_dict()
            for name, backend in zip(plan.backends, backends, strict=True):
                if isinstance(backend, EdgefarmError):
                    documents.append(
                        failed_document(
                            model=model,
                            model_path=plan.model_path,
                            device=facts,
                            backend=name,
                            error=backend,
                        )
                    )
                    continue
                started = time.perf_counter()
                doc = measure(
                    model,
                    device,
                    backend,
                    inputs=inputs,
                    reference=reference,
                    protocol=plan.protocol,
                    options=plan.options.get(name),
                    progress=progress,
                    device_facts=facts,
                )
                doc["wall_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
                documents.append(doc)
        except EdgefarmError as exc:
            if isinstance(exc, HarnessBug):
                raise
            done = {(d["device"].get("id"), d["backend"]) for d in documents}
            documents += [
                failed_document(
                    model=model, model_path=plan.model_path, device=address, backend=b, error=exc
                )
                for b in plan.backends
                if (address, b) not in done
            ]
        finally:
            device.close()
    return documents
