"""Rewrite mode: device paths mapped in the command's words, host paths taken off its output.

This is NOT confinement (see the package docstring): commands run with the emulator's user on
the host's filesystem; only the device paths written literally in a command are mapped.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

# A device path at the start of a shell word: after start, blank, quote, = : ( ; & |.
_DEVICE_WORD = re.compile(r"(?<![\w.~/$-])/(data|sdcard|sys)(?=[/\s;&|()<>'\"`:]|$)")


def rewrite_command(root: Path, command: str) -> str:
    """``command`` with device paths (/data, /sdcard, /sys words) prefixed by ``root``."""
    quoted = shlex.quote(str(root))
    return _DEVICE_WORD.sub(lambda m: f"{quoted}/{m.group(1)}", command)


class OutputFilter:
    """Streams bytes, replacing ``<root>/x`` with ``/x`` and a bare ``<root>`` with ``/``."""

    def __init__(self, root: bytes) -> None:
        self._root = root
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data
        # An occurrence of the root starting before `limit` is complete and so is the byte
        # after it; anything from `limit` on waits for more data.
        limit = len(buf) - len(self._root)
        out, pos = self._replace(buf, limit)
        keep_from = max(pos, limit)
        self._pending = buf[keep_from:]
        return out + buf[pos:keep_from]

    def flush(self) -> bytes:
        buf, self._pending = self._pending, b""
        out, pos = self._replace(buf, len(buf))
        return out + buf[pos:]

    def _replace(self, buf: bytes, limit: int) -> tuple[bytes, int]:
        parts: list[bytes] = []
        pos = 0
        while (i := buf.find(self._root, pos)) != -1 and i < limit:
            parts += [buf[pos:i], b"/"]
            pos = i + len(self._root)
            if buf[pos : pos + 1] == b"/":
                pos += 1
        return b"".join(parts), pos
