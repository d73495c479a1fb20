"""Device addresses, parsed and validated once: ``local``, ``tcp:HOST:PORT``, ``usb:SERIAL``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.errors import JobError

Transport = Literal["local", "tcp", "usb"]

_USAGE = "use local, tcp:HOST:PORT or usb:SERIAL"


@dataclass(frozen=True)
class DeviceAddress:
    """Where a device is reached. ``str()`` gives back the text form."""

    transport: Transport
    host: str = ""
    port: int = 0
    serial: str = ""

    @classmethod
    def parse(cls, text: str) -> DeviceAddress:
        """The address ``text`` names; a JobError (stage run) saying how to write it."""
        if text == "local":
            return cls("local")
        kind, _, rest = text.partition(":")
        if kind == "tcp":
            host, sep, port = rest.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise JobError("run", f"bad device address {text!r}; write tcp:HOST:PORT")
            return cls("tcp", host=host, port=int(port))
        if kind == "usb":
            if not rest or any(c.isspace() for c in rest):
                raise JobError("run", f"bad device address {text!r}; write usb:SERIAL")
            return cls("usb", serial=rest)
        raise JobError("run", f"unknown device {text!r}; {_USAGE}")

    @property
    def is_local(self) -> bool:
        return self.transport == "local"

    def __str__(self) -> str:
        if self.transport == "tcp":
            return f"tcp:{self.host}:{self.port}"
        if self.transport == "usb":
            return f"usb:{self.serial}"
        return "local"
