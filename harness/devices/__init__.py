"""Devices: the Device protocol and its transports (local, tcp:HOST:PORT, usb:SERIAL)."""

from __future__ import annotations

from harness.devices.address import DeviceAddress
from harness.devices.base import Device, DeviceFacts, ShellResult

__all__ = ["Device", "DeviceAddress", "DeviceFacts", "ShellResult", "open_device"]


def open_device(address: str | DeviceAddress) -> Device:
    """Open the device at ``address``: ``local``, ``tcp:HOST:PORT`` or ``usb:SERIAL`` (a
    malformed one is a JobError saying how to write it)."""
    parsed = address if isinstance(address, DeviceAddress) else DeviceAddress.parse(address)
    if parsed.is_local:
        from harness.devices.local import LocalDevice

        return LocalDevice()
    from harness.devices.adb import AdbDevice

    return AdbDevice.open(parsed)
