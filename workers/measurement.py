"""What a job's rows say, turned into what :mod:`harness.bench` takes: the prepared model,
the measurement protocol, seeded inputs and reference outputs (cached on disk)."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from pydantic import ValidationError

from harness.bench import Protocol, Reference, compute_reference, make_model_inputs, reference_name
from harness.config import get_settings
from harness.db import Job, Model
from harness.errors import InfrastructureError, JobError
from harness.farm.models import model_path
from harness.measure.protocol import (
    BackendOptions,
    MeasurementRequest,
    MeasurementSettings,
    ProtocolLimitError,
)
from harness.modelio import PreparedModel, model_from_bytes, parse_input_spec, prepare

log = logging.getLogger(__name__)


def model_file(model: Model) -> Path:
    """The model's file on this host: where the API stored it (content-addressed), or, on a
    worker host without the API's disk, fetched from the API into the same place."""
    path = model_path(model)
    if not path.is_file():
        data = _fetch_model(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)  # never half a model under the final name
    return path


def _fetch_model(model: Model) -> bytes:
    settings = get_settings()
    url = f"{settings.api_url.rstrip('/')}/api/v1/models/{model.id}/file"
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    what = f"model {model.name}: its file is not on this host and the API at {url}"
    log.info("fetching %s from %s", model.name, url)
    try:
        response = httpx.get(url, headers=headers, timeout=settings.adb_transfer_timeout_s)
    except httpx.HTTPError as exc:
        raise InfrastructureError(f"{what} did not answer ({exc})", stage="import") from None
    if response.status_code == 404:
        raise JobError("import", f"the file of model {model.name} is missing from the farm")
    if response.status_code != 200:
        raise InfrastructureError(
            f"{what} answered {response.status_code}: {response.text[:200]}", stage="import"
        )
    data = response.content
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise InfrastructureError(f"{what} sent bytes that do not match its sha256")
    return data


# Prepared models by (sha256, name, input specs). A phone's worker process runs the same
# job's model again and again; preparing it (parsing, onnxslim) took a third of a second
# per run. Few entries: a prepared model holds the whole graph in memory.
_PREPARED: OrderedDict[tuple[str, str, tuple[str, ...]], PreparedModel] = OrderedDict()
_PREPARED_MAX = 4


def prepare_job_model(job: Job) -> PreparedModel:
    """The job's model, read from the store and prepared with the job's input specs.
    A missing file or an unusable model is a JobError (stage import/prepare)."""
    return prepare_stored_model(job.model, tuple(job_settings(job).inputs))


def prepare_stored_model(model: Model, specs_text: tuple[str, ...]) -> PreparedModel:
    """A stored model version prepared with the input specs ``specs_text`` (an A/B job's
    control is another version of its model, prepared like the job's own)."""
    key = (model.sha256, model.name, specs_text)
    if key in _PREPARED:
        _PREPARED.move_to_end(key)
        return _PREPARED[key]
    path = model_file(model)
    file = model_from_bytes(path.read_bytes(), name=model.name, source=model.name, path=path)
    if file.sha256 != model.sha256:
        raise InfrastructureError(f"the stored model file {path} does not match its sha256")
    prepared = prepare(file, [parse_input_spec(text) for text in specs_text])
    _PREPARED[key] = prepared
    while len(_PREPARED) > _PREPARED_MAX:
        _PREPARED.popitem(last=False)
    return prepared


def job_settings(job: Job) -> MeasurementSettings:
    """The job's measurement settings, held to the same bounds as a submission (what a row
    leaves out takes the farm's defaults): a job written past the API (an older row, another
    client) is a JobError, never a phone held for days."""
    try:
        stored = MeasurementRequest.model_validate(job.settings)
        return stored.resolve(get_settings().measurement())
    except ValidationError as exc:
        error: ProtocolLimitError = ProtocolLimitError.of(exc)
    except ProtocolLimitError as exc:
        error = exc
    raise JobError("prepare", f"the job's measurement settings: {error.message}")


def job_protocol(job: Job) -> Protocol:
    """How the job's runs are timed (see :func:`job_settings`)."""
    return job_settings(job).protocol()


def backend_options(job: Job, backend: str) -> BackendOptions:
    return dict(job_settings(job).options.get(backend) or {})


@dataclass
class Prepared:
    """Everything about a run that does not depend on the device."""

    model: PreparedModel
    inputs: dict[str, np.ndarray]
    reference: Reference


def prepare_run(job: Job) -> Prepared:
    """The prepared model, its seeded inputs and the reference outputs."""
    model = prepare_job_model(job)
    seed = job_settings(job).seed
    inputs = make_model_inputs(model, seed=seed)
    return Prepared(model=model, inputs=inputs, reference=cached_reference(model, inputs, seed))


def cached_reference(model: PreparedModel, inputs: dict[str, np.ndarray], seed: int) -> Reference:
    """:func:`harness.bench.compute_reference`, kept per (model, input spec, seed) under the
    cache directory: every run of a job on every phone compares against the same outputs, and
    the model's framework runs once. A failed reference is not kept (it is cheap to fail)."""
    key = hashlib.sha256(
        f"{model.file.sha256}|{model.input_spec_key()}|{seed}".encode()
    ).hexdigest()[:32]
    path = get_settings().cache_path / "references" / f"{key}.npz"
    name = reference_name(model)
    try:
        with np.load(path, allow_pickle=False) as stored:
            outputs = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        return Reference(name, outputs=outputs)
    except (OSError, ValueError, KeyError):
        pass
    reference = compute_reference(model, inputs)
    if reference.outputs is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, *reference.outputs)  # arr_0, arr_1, ...
            os.replace(tmp, path)  # readers see the whole file or none
        except OSError:
            log.warning("could not keep reference outputs in %s", path, exc_info=True)
            Path(tmp).unlink(missing_ok=True)
    return reference
