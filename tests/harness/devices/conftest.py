"""Emulated phones on real TCP ports, and the harness's AdbDevice talking to them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.config import get_settings
from harness.devices.adb import AdbDevice
from harness.devices.emulator import EmulatedPhone


@dataclass(frozen=True)
class Timeouts:
    adb_s: float
    transfer_s: float


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> Timeouts:
    """ADB timeouts of a few seconds (a settings override), for tests of phones that vanish.

    Short enough that a phone that stops answering is noticed within seconds; the emulator
    answers in milliseconds, so even a busy 2-core machine stays well inside them. Devices
    opened after this fixture use them."""
    timeouts = Timeouts(adb_s=2.0, transfer_s=3.0)
    monkeypatch.setenv("EDGEFARM_ADB_TIMEOUT_S", str(timeouts.adb_s))
    monkeypatch.setenv("EDGEFARM_ADB_TRANSFER_TIMEOUT_S", str(timeouts.transfer_s))
    get_settings.cache_clear()
    return timeouts


@pytest.fixture
def emulated_phone() -> Iterator[EmulatedPhone]:
    # A slow thermal model: a temperature a test sets stays put while it looks at it.
    with EmulatedPhone("dimensity-9200", thermal_time_constant_s=3600.0) as phone:
        yield phone


@pytest.fixture
def device(emulated_phone: EmulatedPhone) -> Iterator[AdbDevice]:
    dev = AdbDevice.open(f"tcp:{emulated_phone.serial}")
    yield dev
    dev.close()
