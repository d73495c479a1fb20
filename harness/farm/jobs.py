"""Benchmark jobs: a model, devices and backends in; a Job with one queued Run per
(device, backend) out. Everything a run will need is validated here, before anything is
queued: backends, their options, and the input specs against the model's declared inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from harness.backends import Backend, get_backend
from harness.config import Settings, get_settings
from harness.db import Device, Job, JobStatus, Model, Run, RunStatus
from harness.errors import JobError
from harness.farm import InvalidRequest
from harness.farm.models import spec_from_dict
from harness.measure.protocol import SEED_MAX, ProtocolLimitError, check_protocol
from harness.modelio import InputSpec, parse_input_spec
from harness.modelio.specs import InputLimits, InputTooLarge, check_input_sizes, resolve_inputs

SETTING_KEYS = (
    "inputs",
    "warmup",
    "min_iterations",
    "min_seconds",
    "max_seconds",
    "seed",
    "options",
    "profile",
)


def _number(given: Mapping[str, Any], key: str, default: float) -> Any:
    value = given.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"settings.{key} must be a number", field=("settings", key))
    return value


def _protocol(given: Mapping[str, Any], defaults: Settings) -> dict[str, Any]:
    """warmup, min_iterations, min_seconds and max_seconds, within the protocol's bounds."""
    values = {
        "warmup": _number(given, "warmup", defaults.warmup),
        "min_iterations": _number(given, "min_iterations", defaults.min_iterations),
        "min_seconds": _number(given, "min_seconds", defaults.min_seconds),
        "max_seconds": _number(given, "max_seconds", defaults.max_seconds),
    }
    try:
        check_protocol(**values)
    except ProtocolLimitError as exc:
        raise InvalidRequest(f"settings.{exc.message}", field=("settings", exc.field)) from None
    values["min_seconds"] = float(values["min_seconds"])
    values["max_seconds"] = float(values["max_seconds"])
    return values


def _seed(given: Mapping[str, Any], default: int) -> int:
    value = given.get("seed", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise InvalidRequest(
            f"settings.seed is an integer from 0 to {SEED_MAX}, not {value!r}",
            field=("settings", "seed"),
        )
    return value


def _no_nul(value: Any, field: tuple[str | int, ...]) -> None:
    """PostgreSQL keeps settings as JSONB, which cannot hold NUL: refuse it by name."""
    if isinstance(value, str) and "\x00" in value:
        where = ".".join(map(str, field))
        raise InvalidRequest(f"{where} contains a NUL character", field=field)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _no_nul(key, (*field, str(key)))
            _no_nul(item, (*field, str(key)))
    elif isinstance(value, list | tuple):
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


def _inputs(texts: Any, model: Model, limits: InputLimits) -> list[InputSpec]:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(
            'settings.inputs is a list like ["NAME:1x3x224x224"]', field=("settings", "inputs")
        )
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
        check_input_sizes(resolved, limits)
    except InputTooLarge as exc:
        named = [i for i, spec in enumerate(specs) if spec.name == exc.name]
        raise InvalidRequest(
            f"settings.inputs: {exc.message}", field=("settings", "inputs", *named[:1])
        ) from None
    return specs


def _options(given: Any, backends: list[Backend]) -> dict[str, dict[str, Any]]:
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise InvalidRequest(
            "settings.options maps a backend to its options", field=("settings", "options")
        )
    by_name = {b.name: b for b in backends}
    for name in given:
        if name not in by_name:
            raise InvalidRequest(
                f"settings.options names backend {name!r}, which this request does not use "
                f"(backends: {', '.join(by_name)})",
                field=("settings", "options", name),
            )
    resolved: dict[str, dict[str, Any]] = {}
    for backend in backends:
        options = given.get(backend.name) or {}
        if not isinstance(options, Mapping):
            raise InvalidRequest(
                f"settings.options.{backend.name} must be an object",
                field=("settings", "options", backend.name),
            )
        try:
            resolved[backend.name] = backend.resolve_options(dict(options))
        except JobError as exc:
            raise InvalidRequest(exc.message, field=("settings", "options", backend.name)) from None
    return resolved


def job_settings(
    given: Mapping[str, Any] | None,
    *,
    model: Model,
    backends: Sequence[str],
    defaults: Settings | None = None,
) -> dict[str, Any]:
    """The job's settings as stored: ``given`` validated, completed with the farm's
    defaults, and each backend's options resolved against its own defaults."""
    given = given or {}
    defaults = defaults or get_settings()
    _no_nul(given, ("settings",))
    unknown = sorted(set(given) - set(SETTING_KEYS))
    if unknown:
        raise InvalidRequest(
            f"unknown setting {unknown[0]!r}; settings are {', '.join(SETTING_KEYS)}",
            field=("settings", unknown[0]),
        )
    chosen = _backends(list(backends), model)
    specs = _inputs(given.get("inputs", []), model, InputLimits.of(defaults))
    protocol = _protocol(given, defaults)
    profile = given.get("profile", False)
    if not isinstance(profile, bool):
        raise InvalidRequest("settings.profile is true or false", field=("settings", "profile"))
    return {
        "inputs": [str(spec) for spec in specs],
        **protocol,
        "seed": _seed(given, defaults.seed),
        "options": _options(given.get("options"), chosen),
        "profile": profile,
    }


def create_job(
    *,
    session: Session,
    model: Model,
    devices: Sequence[Device],
    backends: Sequence[str],
    settings: Mapping[str, Any] | None,
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
        settings=stored,
        status=JobStatus.queued,
        nightly=nightly,
    )
    session.add(job)
    for device in devices:
        for backend in backends:
            job.runs.append(Run(device_id=device.id, backend=backend, status=RunStatus.queued))
    session.flush()
    return job
