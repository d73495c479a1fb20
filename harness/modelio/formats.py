"""Reading a model file: which format it is, its bytes and their sha256."""

from __future__ import annotations

import hashlib
import mmap
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from harness.errors import JobError

ModelFormat = Literal["onnx", "tflite", "pt2"]
FORMATS: tuple[ModelFormat, ...] = ("onnx", "tflite", "pt2")

MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own limit for a single ONNX file


@dataclass(frozen=True)
class ModelFile:
    """A model as given: its name (file stem), format, bytes and sha256."""

    name: str
    format: ModelFormat
    data: bytes
    sha256: str
    path: Path | None = None

    @property
    def size(self) -> int:
        return len(self.data)


def detect_format(data: bytes, *, source: str) -> ModelFormat:
    """Tell ONNX, TFLite and PyTorch ``.pt2`` apart by content (never by file extension).

    TFLite files are flatbuffers with the identifier ``TFL3`` at offset 4; ``.pt2`` files are
    zip archives written by ``torch.export.save``; ONNX is a protobuf ``ModelProto``, which has no
    magic number, so it is recognised by parsing (see :func:`harness.modelio.onnx_io.parse`).
    """
    if not data:
        raise JobError("import", f"{source} is empty; expected an ONNX, TFLite or .pt2 model")
    if data[4:8] == b"TFL3":
        return "tflite"
    if data[:4] == b"PK\x03\x04":
        return "pt2"
    # Protobuf ModelProto starts with field 1 (ir_version, varint: 0x08) in every exporter we
    # know of; other leading fields are legal, so parse before refusing.
    return "onnx"


def read_model(path: Path) -> ModelFile:
    """Read ``path`` and recognise its format. A missing or unreadable file is a JobError."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise JobError("import", f"model file {path} does not exist") from None
    except OSError as exc:
        raise JobError("import", f"cannot read model file {path}: {exc.strerror}") from None
    if path.is_dir():
        raise JobError("import", f"{path} is a directory, not a model file")
    if size > MAX_MODEL_BYTES:
        raise JobError("import", f"{path} is {size} bytes; models over 2 GiB are not supported")
    data = path.read_bytes()
    return model_from_bytes(data, name=path.stem, source=str(path), path=path)


def model_from_path(path: Path, *, name: str, sha256: str, source: str | None = None) -> ModelFile:
    """The model at ``path`` whose digest is already known (an upload hashed as it was
    received). A TFLite file is memory-mapped rather than read: its flatbuffer is parsed in
    place, so only what is parsed is ever in memory, however large the file."""
    source = source or name
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise JobError("import", f"{source} is {size} bytes; models over 2 GiB are not supported")
    with path.open("rb") as handle:
        head = handle.read(8)
        fmt = detect_format(head, source=source)
        if fmt == "tflite":
            # The map reads like bytes for every TFLite reader (len, slices, buffer protocol),
            # and outlives the file handle.
            data = cast(bytes, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
        else:
            handle.seek(0)
            data = handle.read()
    if fmt == "pt2":
        _check_pt2(data, source=source)
    return ModelFile(name=name, format=fmt, data=data, sha256=sha256, path=path)


def model_from_bytes(
    data: bytes, *, name: str, source: str | None = None, path: Path | None = None
) -> ModelFile:
    fmt = detect_format(data, source=source or name)
    if fmt == "pt2":
        _check_pt2(data, source=source or name)
    return ModelFile(
        name=name, format=fmt, data=data, sha256=hashlib.sha256(data).hexdigest(), path=path
    )


def _check_pt2(data: bytes, *, source: str) -> None:
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise JobError(
            "import", f"{source} looks like a zip archive but is corrupt or truncated"
        ) from None
    if not any(
        n.endswith(("archive_format", "serialized_exported_program.json")) or "/models/" in n
        for n in names
    ):
        raise JobError(
            "import",
            f"{source} is a zip archive but not a PyTorch ExportedProgram (.pt2) written by "
            "torch.export.save",
        )
