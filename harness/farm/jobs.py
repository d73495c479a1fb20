"""Benchmark jobs: a model, devices and backends in; a Job with one queued Run per
(device, backend) out. Everything a run will need is validated here, before anything is
queued: backends, their options, and the input specs against the model's declared inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import JsonValue
from sqlalchemy.orm import Session

from harness.backends import Backend, get_backend
from harness.config import Settings, get_settings
from harness.db import Device, Job, JobStatus, Model, Run, RunStatus
from harness.errors import JobError
from harness.farm import InvalidRequest
from harness.farm.models import spec_from_dict
from harness.measure.protocol import (
    BackendOptions,
    MeasurementRequest,
    MeasurementSettings,
    ProtocolLimitError,
)
from harness.modelio import InputSpec, parse_input_spec
from harness.modelio.specs import InputLimits, InputTooLarge, check_input_sizes, resolve_inputs


def _no_nul(value: JsonValue, field: tuple[str | int, ...]) -> None:
    """PostgreSQL keeps settings as JSONB, which cannot hold NUL: refuse it by name."""
    if isinstance(value, str) and "\x00" in value:
        where = ".".join(map(str, field))
        raise InvalidRequest(f"{where} contains a NUL character", field=field)
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, (*field, str(key)))
            _no_nul(item, (*field, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_nul(item, (*field, i))


def _backends(names: Sequence[str], model: Model) -> list[Backend]:
    if not names:
        raise InvalidRequest("give at least one backend", field=("backends",))
    backends: list[Backend] = []
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"backend {name!r} is given twice", field=("backends", i))
        try:
            backend = get_backend(name)
            backend.check_format(model.format, model_name=model.name)
        except JobError as exc:
            raise InvalidRequest(exc.message, field=("backends", i)) from None
        backends.append(backend)
    return backends


def validate_inputs(
    texts: Sequence[str], model: Model, limits: InputLimits | None = None
) -> list[InputSpec]:
    """The input specs ``texts`` parsed and checked against the model's declared inputs and
    ``limits`` (default: the settings'); InvalidRequest names the offending one."""
    specs: list[InputSpec] = []
    for i, text in enumerate(texts):
        try:
            specs.append(parse_input_spec(text))
        except JobError as exc:
            raise InvalidRequest(exc.message, field=("settings", "inputs", i)) from None
    declared = [spec_from_dict(entry) for entry in model.input_spec]
    try:
        resolved = resolve_inputs(declared, specs, model_name=model.name)
    except JobError as exc:
        # The harness's messages speak of the CLI's --input; here it is settings.inputs.
        message = exc.message.replace("--input", "settings.inputs")
        raise InvalidRequest(message, field=("settings", "inputs")) from None
    try:
        check_input_sizes(resolved, limits or InputLimits.of(get_settings()))
    except InputTooLarge as exc:
        named = [i for i, spec in enumerate(specs) if spec.name == exc.name]
        raise InvalidRequest(
            f"settings.inputs: {exc.message}", field=("settings", "inputs", *named[:1])
        ) from None
    return specs


def _options(
    given: Mapping[str, BackendOptions], backends: list[Backend]
) -> dict[str, BackendOptions]:
    by_name = {b.name: b for b in backends}
    for name in given:
        if name not in by_name:
            raise InvalidRequest(
                f"settings.options names backend {name!r}, which this request does not use "
                f"(backends: {', '.join(by_name)})",
                field=("settings", "options", name),
            )
    resolved: dict[str, BackendOptions] = {}
    for backend in backends:
        options = given.get(backend.name) or {}
        try:
            resolved[backend.name] = backend.resolve_options(dict(options))
        except JobError as exc:
            raise InvalidRequest(exc.message, field=("settings", "options", backend.name)) from None
    return resolved


def job_settings(
    given: MeasurementRequest | None,
    *,
    model: Model,
    backends: Sequence[str],
    defaults: Settings | None = None,
) -> MeasurementSettings:
    """The job's settings as stored: ``given`` completed with the farm's defaults, its input
    specs checked against the model, and each backend's options resolved against its own
    defaults. :class:`~harness.farm.InvalidRequest` names the offending field."""
    given = given or MeasurementRequest()
    defaults = defaults or get_settings()
    for name, options in given.options.items():
        _no_nul(name, ("settings", "options", name))
        _no_nul(options, ("settings", "options", name))
    chosen = _backends(list(backends), model)
    specs = validate_inputs(given.inputs, model, InputLimits.of(defaults))
    try:
        complete = given.resolve(defaults.measurement())
    except ProtocolLimitError as exc:
        raise InvalidRequest(f"settings.{exc.message}", field=("settings", exc.field)) from None
    return complete.model_copy(
        update={
            "inputs": [str(spec) for spec in specs],
            "options": _options(given.options, chosen),
        }
    )


def create_job(
    *,
    session: Session,
    model: Model,
    devices: Sequence[Device],
    backends: Sequence[str],
    settings: MeasurementRequest | None,
    submitted_by: str,
    defaults: Settings | None = None,
    nightly: bool = False,
) -> Job:
    """Create a queued Job and one queued Run per (device, backend), flushed (ids assigned)
    but not committed. :class:`~harness.farm.InvalidRequest` names the offending field."""
    if not devices:
        raise InvalidRequest("no devices given", field=("devices",))
    stored = job_settings(settings, model=model, backends=backends, defaults=defaults)
    job = Job(
        submitted_by=submitted_by,
        model_id=model.id,
        settings=stored.model_dump(mode="json"),
        status=JobStatus.queued,
        nightly=nightly,
    )
    session.add(job)
    for device in devices:
        for backend in backends:
            job.runs.append(Run(device_id=device.id, backend=backend, status=RunStatus.queued))
    session.flush()
    return job
