"""Receiving a model upload: the multipart body streamed to a temporary file with the size
limit enforced while reading, so an oversized upload is refused before it is all on disk.

Starlette's own form parsing spools every file in full before the route runs and has no size
limit for files; this parser accepts exactly one part, ``file``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import IO, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from harness.farm.models import ModelTooLarge

FIELD = "file"
# Multipart framing around the file: boundaries and part headers.
_OVERHEAD = 64 * 1024


@dataclass
class Upload:
    filename: str
    data: bytes


def _invalid(kind: str, loc: tuple[str, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None}])


class _Receiver:
    """python-multipart callbacks writing the ``file`` part to ``sink``."""

    def __init__(self, sink: IO[bytes], max_bytes: int) -> None:
        self.sink = sink
        self.max_bytes = max_bytes
        self.size = 0
        self.filename: str | None = None
        self.seen_file = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name != FIELD:
            raise _invalid("extra_forbidden", ("body", name), "Extra inputs are not permitted")
        if self.seen_file:
            raise _invalid("value_error", ("body", FIELD), "give exactly one file")
        self.seen_file = True
        self.filename = options.get(b"filename", b"").decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.size += end - start
        if self.size > self.max_bytes:
            raise ModelTooLarge(None, self.max_bytes)
        self.sink.write(data[start:end])


async def receive_upload(request: Request, *, max_bytes: int) -> Upload:
    """The uploaded ``file`` part. :class:`ModelTooLarge` as soon as it passes
    ``max_bytes``; a body that is not a multipart form with one ``file``: a 422 like
    FastAPI's own validation errors."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise _invalid(
            "missing", ("body", FIELD), "Field required (send multipart/form-data with a file)"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + _OVERHEAD:
        raise ModelTooLarge(int(declared), max_bytes)
    with tempfile.TemporaryFile(prefix="edgefarm-upload-") as sink:
        receiver = _Receiver(sink, max_bytes)
        parser = MultipartParser(params[b"boundary"], receiver.callbacks())
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise _invalid("value_error", ("body", FIELD), f"malformed multipart: {exc}") from None
        if not receiver.seen_file:
            raise _invalid("missing", ("body", FIELD), "Field required")
        sink.seek(0)
        data = sink.read()
    return Upload(filename=receiver.filename or "model", data=data)
