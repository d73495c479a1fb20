"""Devices: the Device protocol and its transports (local, tcp:HOST:PORT, usb:SERIAL)."""

from __future__ import annotations

from harness.devices.base import Device, DeviceFacts, ShellResult
from harness.errors import JobError

__all__ = ["Device", "DeviceFacts", "ShellResult", "open_device"]


def open_device(address: str) -> Device:
    """Open the device at ``address``: ``local``, ``tcp:HOST:PORT`` or ``usb:SERIAL``."""
    if address == "local":
        from harness.devices.local import LocalDevice

        return LocalDevice()
    if address.startswith(("tcp:", "usb:")):
        from harness.devices.adb import AdbDevice

        return AdbDevice.open(address)
    raise JobError("run", f"unknown device {address!r}; use local, tcp:HOST:PORT or usb:SERIAL")
