"""One (device, backend) measurement, in the steps a farm worker spreads around a lease.

:class:`Measurement` goes through them: :meth:`~Measurement.prepare` (what the device runs;
off the device unless the backend measures on it), :meth:`~Measurement.run` (on the device),
:meth:`~Measurement.compare` (off it). Each step writes into the result document; after a
failure the later steps do nothing. :func:`measure` takes all of them in a row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness.backends import Backend, Prepared, Target
from harness.bench.document import base_document, fail, record_comparison, record_run
from harness.config import get_settings
from harness.db.session import SessionScope
from harness.devices import Device
from harness.devices.base import DeviceFacts
from harness.errors import EdgefarmError, HarnessBug
from harness.jsontypes import BackendOptions
from harness.measure.device_run import Progress, RunLimits, RunnerCall, RunOk, run_on_device
from harness.measure.document import DeviceRecord, DeviceRef, ResultDocument, device_record
from harness.measure.inputs import load_inputs_npz, make_inputs
from harness.measure.protocol import Protocol
from harness.modelio import PreparedModel

log = logging.getLogger(__name__)


def _quiet(event: str, message: str) -> None:
    log.info("%s: %s", event, message)


@dataclass
class Reference:
    """Reference outputs for a model's inputs, or why there are none."""

    name: str
    outputs: list[np.ndarray] | None = None
    error: str | None = None


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


def run_limits() -> RunLimits:
    """What a run on a device is held to, from the settings."""
    settings = get_settings()
    return RunLimits(
        run_timeout_s=settings.run_timeout_s,
        cooldown_max_temp_c=settings.cooldown_max_temp_c,
        cooldown_max_wait_s=settings.cooldown_max_wait_s,
    )


class Measurement:
    """``model`` measured with ``backend`` on the device ``facts`` describe (module doc).

    Its steps raise only HarnessBug (our defect); every JobError and InfrastructureError
    ends the measurement ``failed`` with its stage (``retryable`` for the farm's)."""

    def __init__(
        self,
        model: PreparedModel,
        backend: Backend,
        facts: DeviceRecord | Mapping[str, object],
        *,
        protocol: Protocol,
        options: BackendOptions | None = None,
        progress: Progress = _quiet,
    ) -> None:
        self.model = model
        self.backend = backend
        self.protocol = protocol
        self.options = options
        self.progress = progress
        self.doc = base_document(model, None, facts, backend.name)
        self.prepared: Prepared | None = None
        self.inputs: tuple[np.ndarray, ...] | None = None
        self.outputs: tuple[np.ndarray, ...] | None = None

    @property
    def failed(self) -> bool:
        return self.doc.error is not None

    @property
    def needs_device_to_prepare(self) -> bool:
        """Whether :meth:`prepare` measures on the device (``partition: cost``)."""
        return self.backend.needs_device(self.options)

    def start(self, *, facts: DeviceRecord | Mapping[str, object] | None = None) -> None:
        """The device's facts as the document records them (read from the device by the
        caller, when it did not know them up front), and the measurement's settings."""
        if facts is not None:
            self.doc.device = device_record(facts)
        try:
            self.backend.check_format(self.model.format, model_name=self.model.name)
            self.doc.provenance.target = self.target
            self.doc.provenance.protocol = self.protocol
        except EdgefarmError as exc:
            self.fail_with(exc)

    @property
    def target(self) -> str:
        return self.doc.facts.target or "host"

    def prepare(
        self, *, device: Device | None = None, cost_sessions: SessionScope | None = None
    ) -> None:
        """What the device runs (compiled, or found in the cache), its provenance and
        partition report into the document. ``device``: for a backend that measures on it
        (:attr:`needs_device_to_prepare`)."""
        if self.failed:
            return
        where = Target(
            facts=self.doc.facts,
            target=self.target,
            limits=run_limits(),
            progress=self.progress,
            device=device,
            cost_sessions=cost_sessions,
        )
        try:
            self.prepared = self.backend.prepare(self.model, self.options, where)
        except EdgefarmError as exc:
            self.fail_with(exc)
            return
        if self.prepared.partition is not None:
            self.doc.partition = self.prepared.partition
        self.doc.provenance = self.doc.provenance.model_copy(update=self.prepared.provenance)
        try:
            self.prepared = replace(self.prepared, program=self.prepared.program.ready())
        except EdgefarmError as exc:
            self.fail_with(exc)

    def on_device(
        self,
        device: Device,
        inputs: dict[str, np.ndarray],
        *,
        exclusive: bool = False,
        cost_sessions: SessionScope | None = None,
    ) -> RunOk | None:
        """All that needs the device, in a row: runners left over from interrupted runs
        ended (``exclusive``: the caller owns the device), the preparation if it measures on
        the device, the run. Without such a preparation, the leftover runners are ended in
        the run's first round trip."""
        if self.failed:
            return None
        if self.prepared is not None:
            return self.run(device, inputs, exclusive=exclusive, reset=exclusive)
        if exclusive:
            try:
                ended = device.reset()
            except EdgefarmError as exc:
                self.fail_with(exc)
                return None
            if ended:
                log.warning("%s: ended leftover runner(s) %s", device.id, ended)
        self.prepare(device=device, cost_sessions=cost_sessions)
        return self.run(device, inputs, exclusive=exclusive)

    def run(
        self,
        device: Device,
        inputs: dict[str, np.ndarray],
        *,
        exclusive: bool = False,
        reset: bool = False,
    ) -> RunOk | None:
        """The prepared program run on ``device`` (deploy, push, cool down, run, pull);
        ``reset``: leftover runners ended first (see :func:`run_on_device`)."""
        if self.failed or self.prepared is None:
            return None
        self.inputs = tuple(inputs[spec.name] for spec in self.model.inputs)
        call = RunnerCall(
            self.prepared.program,
            self.inputs,
            self.protocol,
            outputs=True,
            label=self.backend.name,
        )
        try:
            ran = record_run(
                self.doc,
                run_on_device(
                    device,
                    call,
                    limits=run_limits(),
                    exclusive=exclusive,
                    reset=reset,
                    progress=self.progress,
                ),
            )
        except EdgefarmError as exc:
            self.fail_with(exc)
            return None
        self.outputs = ran.outputs
        return ran

    def compare(self, reference: Reference, label: str) -> ResultDocument:
        """The outputs against the reference's; the finished document. Outputs of an
        offloading backend that differ get their first divergence located."""
        if not self.failed and self.outputs is not None:
            self.progress("compare", f"comparing {label} with {reference.name}")
            try:
                record_comparison(
                    self.doc, self.outputs, reference.name, reference.outputs, reference.error
                )
            except EdgefarmError as exc:
                self.fail_with(exc)
                self.locate_divergence(label)
        return self.doc

    def locate_divergence(self, label: str) -> None:
        """``accuracy.first_divergence`` of outputs that failed the comparison, when the
        backend can say where they went wrong."""
        accuracy = self.doc.accuracy
        if accuracy is None or accuracy.passed or self.prepared is None or self.inputs is None:
            return
        if not self.backend.offloads():
            return
        self.progress("compare", f"locating where {label} first diverges")
        found = self.backend.first_divergence(self.model, self.prepared, self.inputs)
        if found is not None:
            self.doc.accuracy = replace(accuracy, first_divergence=found)

    def fail_with(self, exc: EdgefarmError) -> None:
        """End the measurement failed with ``exc``; a HarnessBug is raised again."""
        if isinstance(exc, HarnessBug):
            raise exc
        fail(self.doc, exc)


def measure(
    model: PreparedModel,
    device: Device,
    backend: Backend,
    *,
    inputs: dict[str, np.ndarray],
    reference: Reference,
    protocol: Protocol,
    options: BackendOptions | None = None,
    progress: Progress = _quiet,
    device_facts: DeviceFacts | None = None,
    exclusive: bool = False,
    cost_sessions: SessionScope | None = None,
) -> ResultDocument:
    """Measure ``model`` with ``backend`` on ``device``; always returns a result document.

    ``exclusive``: the caller owns the device (a farm worker holding its lease), so runners
    left over from interrupted runs are ended first and cannot overlap this measurement.
    ``cost_sessions``: short transactions on the store where ``partition: cost`` finds and
    keeps per-device-class costs (default: ``edgefarm bench``'s,
    :func:`harness.db.costs.local_store`).

    Raises only HarnessBug (our defect); every JobError and InfrastructureError becomes a
    ``failed`` document with its stage.
    """
    measurement = Measurement(
        model,
        backend,
        device_facts or DeviceRef(id=device.id),
        protocol=protocol,
        options=options,
        progress=progress,
    )
    try:
        facts = device.facts() if device_facts is None else None
        if exclusive:
            ended = device.reset()
            if ended:
                log.warning("%s: ended leftover runner(s) %s", device.id, ended)
    except EdgefarmError as exc:
        measurement.fail_with(exc)
        return measurement.doc
    measurement.start(facts=facts)
    measurement.prepare(device=device, cost_sessions=cost_sessions)
    measurement.run(device, inputs, exclusive=exclusive)
    return measurement.compare(reference, f"{backend.name} on {device.id}")
