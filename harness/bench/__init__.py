"""One benchmark: a model measured on devices with backends, as result documents.

:func:`run_bench` is what ``edgefarm bench`` does; :func:`measure` is one (device, backend)
measurement, and :class:`Measurement` the same in steps, as a farm worker takes them around
its lease. Every failure ends its measurement as ``failed`` with a stage and a one-line
message; the other measurements still run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends import Backend, get_backend
from harness.bench.document import RESULT_KEYS, failed_document
from harness.bench.measurement import (
    Measurement,
    Reference,
    compute_reference,
    make_model_inputs,
    measure,
    reference_name,
    run_limits,
)
from harness.devices import open_device
from harness.errors import EdgefarmError, HarnessBug, JobError
from harness.jsontypes import BackendOptions
from harness.measure.device_run import Progress
from harness.measure.document import ResultDocument
from harness.measure.protocol import Protocol as Protocol  # re-exported: callers import it here
from harness.modelio import InputSpec, load

__all__ = [
    "RESULT_KEYS",
    "BenchPlan",
    "Measurement",
    "Protocol",
    "Reference",
    "compute_reference",
    "failed_document",
    "make_model_inputs",
    "measure",
    "reference_name",
    "run_bench",
    "run_limits",
]


log = logging.getLogger(__name__)


def _quiet(event: str, message: str) -> None:
    log.info("%s: %s", event, message)


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
    options: dict[str, BackendOptions] = field(default_factory=dict)


def run_bench(plan: BenchPlan, progress: Progress = _quiet) -> list[ResultDocument]:
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

    documents: list[ResultDocument] = []
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
            facts = device.facts()
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
                doc.wall_ms = round((time.perf_counter() - started) * 1000.0, 3)
                documents.append(doc)
        except EdgefarmError as exc:
            if isinstance(exc, HarnessBug):
                raise
            done = {(d.device.id, d.backend) for d in documents}
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
