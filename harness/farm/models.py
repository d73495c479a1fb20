"""Model storage: uploaded model files, content-addressed by sha256.

A file lives at ``<EDGEFARM_HOME>/models/<sha256>.<format>``, written under a temporary name
and renamed, so a reader never sees half a file. The row and the file are created together;
should the transaction roll back after the file was written, the file stays as an orphan
that the next upload of the same bytes reuses (same name, same content).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness.config import get_settings
from harness.db import Model
from harness.errors import JobError
from harness.modelio import ModelFile, TensorSpec, model_from_bytes, prepare

log = logging.getLogger(__name__)


class ModelTooLarge(JobError):
    """The upload is over the size limit; nothing was stored (the API answers 413)."""

    def __init__(self, size: int | None, max_bytes: int) -> None:
        what = f"{size} bytes" if size is not None else "over the limit"
        super().__init__(
            "import",
            f"the model file is {what}; the farm accepts at most {max_bytes} bytes "
            "(EDGEFARM_MAX_UPLOAD_MB)",
        )
        self.size = size
        self.max_bytes = max_bytes


class NotAModel(JobError):
    """The upload is not a model edgefarm can read (the API answers 400 with the reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__("import", reason)


def model_name(filename: str) -> str:
    """The model's name: the uploaded file's stem, without any directory part."""
    base = PureWindowsPath(PurePosixPath(filename or "").name).name
    return (Path(base).stem.strip() or "model")[:255]


def declared_inputs(file: ModelFile) -> list[TensorSpec]:
    """The model's inputs as declared, dynamic dimensions by name.

    Validates the model with :func:`harness.modelio.prepare`. Only its ``import`` errors mean
    "not a model": a model with dynamic dimensions fails preparation without given specs, yet
    is accepted, since the input spec comes with each benchmark request.
    """
    try:
        return prepare(file, []).inputs
    except JobError as exc:
        if exc.stage == "import":
            raise NotAModel(exc.message) from None
        log.debug("%s needs input specs to prepare: %s", file.name, exc.message)
    try:
        return _declared(file)
    except JobError as exc:
        raise NotAModel(exc.message) from None


def _declared(file: ModelFile) -> list[TensorSpec]:
    if file.format == "onnx":
        from harness.modelio import onnx_io

        return onnx_io.declared_inputs(onnx_io.parse(file.data, source=file.name))
    if file.format == "tflite":
        from harness.modelio import tflite_io

        return tflite_io.declared_inputs(tflite_io.parse(file.data, source=file.name))
    from harness.modelio import torch_io

    return torch_io.declared_inputs(torch_io.parse(file.data, source=file.name))


def models_dir() -> Path:
    return get_settings().models_path


def model_path(model: Model, directory: Path | None = None) -> Path:
    """Where the file of ``model`` is stored (``directory``: default the settings')."""
    return (directory or models_dir()) / f"{model.sha256}.{model.format}"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from workers running as others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ensure_file(path: Path, data: bytes) -> None:
    if not (path.is_file() and path.stat().st_size == len(data)):
        _write_atomically(path, data)


def store_model(
    data: bytes,
    filename: str,
    *,
    session: Session,
    max_bytes: int,
    directory: Path | None = None,
) -> tuple[Model, bool]:
    """Validate and store an uploaded model; return its row and whether it is new.

    Over ``max_bytes``: :class:`ModelTooLarge`, nothing stored. Not a model:
    :class:`NotAModel` naming why. The same bytes uploaded again return the existing row
    (``created`` False), whatever the file name.
    """
    if len(data) > max_bytes:
        raise ModelTooLarge(len(data), max_bytes)
    sha256 = hashlib.sha256(data).hexdigest()
    directory = directory or models_dir()
    existing = session.scalar(select(Model).where(Model.sha256 == sha256))
    if existing is not None:
        _ensure_file(model_path(existing, directory), data)
        return existing, False
    name = model_name(filename)
    try:
        file = model_from_bytes(data, name=name, source=filename or name)
    except JobError as exc:
        raise NotAModel(exc.message) from None
    inputs = declared_inputs(file)
    model = Model(
        sha256=sha256,
        name=name,
        format=file.format,
        size_bytes=len(data),
        input_spec=[_spec_dict(spec) for spec in inputs],
    )
    _ensure_file(model_path(model, directory), data)
    # A concurrent upload of the same bytes may win the unique sha256; then it is ours too.
    try:
        with session.begin_nested():
            session.add(model)
    except IntegrityError:
        winner = session.scalar(select(Model).where(Model.sha256 == sha256))
        if winner is None:
            raise
        return winner, False
    return model, True


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}


def spec_from_dict(entry: dict[str, Any]) -> TensorSpec:
    """A stored ``input_spec`` entry back as a :class:`TensorSpec`."""
    return TensorSpec(str(entry["name"]), tuple(entry["shape"]), str(entry["dtype"]))
