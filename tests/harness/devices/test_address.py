"""Device addresses are parsed once, into a DeviceAddress; every malformed one is a JobError
that says how to write it."""

from __future__ import annotations

import pytest

from harness.devices import DeviceAddress, open_device
from harness.errors import JobError


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("local", DeviceAddress("local")),
        ("tcp:127.0.0.1:5555", DeviceAddress("tcp", host="127.0.0.1", port=5555)),
        ("tcp:phone.lab:1", DeviceAddress("tcp", host="phone.lab", port=1)),
        ("tcp:::1:5555", DeviceAddress("tcp", host="::1", port=5555)),
        ("usb:R5CT12345", DeviceAddress("usb", serial="R5CT12345")),
    ],
)
def test_addresses_parse_and_print_back(text: str, parsed: DeviceAddress) -> None:
    assert DeviceAddress.parse(text) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("tcp:127.0.0.1", "tcp:HOST:PORT"),
        ("tcp::5555", "tcp:HOST:PORT"),
        ("tcp:host:0", "tcp:HOST:PORT"),
        ("tcp:host:65536", "tcp:HOST:PORT"),
        ("tcp:host:55x", "tcp:HOST:PORT"),
        ("usb:", "usb:SERIAL"),
        ("usb:a b", "usb:SERIAL"),
        ("LOCAL", "use local, tcp:HOST:PORT or usb:SERIAL"),
        ("192.168.1.20:5555", "use local, tcp:HOST:PORT or usb:SERIAL"),
        ("", "use local, tcp:HOST:PORT or usb:SERIAL"),
    ],
)
def test_a_malformed_address_says_how_to_write_it(text: str, hint: str) -> None:
    with pytest.raises(JobError) as caught:
        DeviceAddress.parse(text)
    assert caught.value.stage == "run" and hint in caught.value.message
    with pytest.raises(JobError):  # opening one parses it the same way, before any I/O
        open_device(text)
