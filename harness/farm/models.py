"""Model storage: uploaded model files, content-addressed by sha256.

A file lives at ``<EDGEFARM_HOME>/models/<sha256>.<format>``. An upload is received into a
hidden temporary file in that directory (:class:`StagedModel`: hashed as it is written, refused
past the size limit), parsed from there, and renamed into place, so a reader never sees half
a file and the upload is never held in memory. The row and the file are created together;
should the transaction roll back after the file was placed, the file stays as an orphan that
the next upload of the same bytes reuses (same name, same content).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness.config import get_settings
from harness.db import Model
from harness.errors import JobError
from harness.modelio import ModelFile, TensorSpec, prepare
from harness.modelio.formats import model_from_path
from harness.modelio.specs import TensorJson

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
    base = "".join(ch for ch in base if ch.isprintable())  # no NUL or control characters
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


class StagedModel:
    """An upload being received: a hidden temporary file in the models directory, hashed as
    it is written; :class:`ModelTooLarge` as soon as it passes ``max_bytes``. Leaving the
    ``with`` block removes whatever :func:`store_model` did not move into place."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".part")
        self.path = Path(name)
        self.directory = directory
        self.max_bytes = max_bytes
        self.size = 0
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ModelTooLarge(None, self.max_bytes)
        self._hash.update(chunk)
        self._file.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        """Flush to disk; nothing more will be written."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def place(self, path: Path) -> None:
        """Move the finished file to ``path`` (readable by workers running as others)."""
        self.finish()
        os.chmod(self.path, 0o644)  # mkstemp's 0600 would hide it from other users
        os.replace(self.path, path)

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.discard()


def _is_stored(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def store_model(staged: StagedModel, filename: str, *, session: Session) -> tuple[Model, bool]:
    """Validate a received upload and store it; return its row and whether it is new.

    Not a model: :class:`NotAModel` naming why, nothing stored. The same bytes uploaded
    again return the existing row (``created`` False), whatever the file name.
    """
    staged.finish()
    sha256 = staged.sha256
    directory = staged.directory
    existing = session.scalar(select(Model).where(Model.sha256 == sha256))
    if existing is not None:
        path = model_path(existing, directory)
        if not _is_stored(path, staged.size):
            staged.place(path)
        return existing, False
    name = model_name(filename)
    try:
        file = model_from_path(staged.path, name=name, sha256=sha256, source=filename or name)
    except JobError as exc:
        raise NotAModel(exc.message) from None
    inputs = declared_inputs(file)
    model = Model(
        sha256=sha256,
        name=name,
        format=file.format,
        size_bytes=staged.size,
        input_spec=[spec.to_dict() for spec in inputs],
    )
    path = model_path(model, directory)
    if not _is_stored(path, staged.size):
        staged.place(path)
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


def spec_from_dict(entry: TensorJson) -> TensorSpec:
    """A stored ``input_spec`` entry back as a :class:`TensorSpec`."""
    return TensorSpec(str(entry["name"]), tuple(entry["shape"]), str(entry["dtype"]))
