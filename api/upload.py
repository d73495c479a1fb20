"""Receiving a model upload: the multipart body streamed into the models store's staging file
(:class:`harness.farm.models.StagedModel`), hashed and size-checked as it arrives, so an
upload is never held in memory and an oversized one is refused before it is all on disk.

Starlette's own form parsing spools every file in full before the route runs and has no size
limit for files; this parser accepts exactly one part, ``file``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from harness.farm.models import ModelTooLarge, StagedModel

FIELD = "file"
# Multipart framing around the file: boundaries and part headers.
_OVERHEAD = 64 * 1024
# A part's headers are a few hundred bytes; more is not a form anyone means to send.
_MAX_HEADER_BYTES = 16 * 1024


def _invalid(kind: str, loc: tuple[str, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None}])


class _Receiver:
    """python-multipart callbacks writing the ``file`` part to ``sink``."""

    def __init__(self, sink: StagedModel) -> None:
        self.sink = sink
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

    def _check_header(self) -> None:
        if len(self._header_name) + len(self._header_value) > _MAX_HEADER_BYTES:
            raise _invalid("value_error", ("body", FIELD), "a part's header is too long")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

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
        self.sink.write(memoryview(data)[start:end])


async def receive_upload(request: Request, sink: StagedModel) -> str:
    """Stream the uploaded ``file`` part into ``sink``; return its file name.
    :class:`ModelTooLarge` as soon as it passes the sink's limit (or when Content-Length
    already says so); a body that is not a multipart form with one ``file``: a 422 like
    FastAPI's own validation errors."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise _invalid(
            "missing", ("body", FIELD), "Field required (send multipart/form-data with a file)"
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        if len(declared) > 18:  # beyond any disk, and beyond int()'s patience
            raise ModelTooLarge(None, sink.max_bytes)
        if int(declared) > sink.max_bytes + _OVERHEAD:
            raise ModelTooLarge(int(declared), sink.max_bytes)
    receiver = _Receiver(sink)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise _invalid("value_error", ("body", FIELD), f"malformed multipart: {exc}") from None
    if not receiver.seen_file:
        raise _invalid("missing", ("body", FIELD), "Field required")
    return receiver.filename or "model"
