"""A device is its serial, not its address: an emulated phone restarted on another port is
the same device row (its history, its queue); a row whose address another phone took over is
marked gone; a pre-serial row is adopted by the phone now at its address."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from harness.db import Device, DeviceHealth, make_session_factory
from harness.devices.emulator import EmulatedPhone
from harness.farm.registry import register_device

from workerfarm import Farm


def _register(farm: Farm, address: str) -> Device:
    with make_session_factory(farm.engine)() as session:
        device = register_device(address, session=session, worker="tests")
        session.commit()
        return device


def _rows(farm: Farm) -> list[Device]:
    with farm.sessions() as session:
        return list(session.scalars(select(Device).order_by(Device.id)))


def test_a_phone_on_a_new_port_is_the_same_device(farm: Farm, tmp_path: Path) -> None:
    root = tmp_path / "phone"
    with EmulatedPhone("pixel-3a", root=root) as phone:
        first = _register(farm, f"tcp:{phone.serial}")
    assert first.serial and first.serial.startswith("EF")  # ro.serialno, kept in its sandbox
    assert first.facts["extra"]["sandbox"] == "namespace"  # how it confines its commands
    with EmulatedPhone("pixel-3a", root=root) as again:  # a new free port, the same sandbox
        assert f"tcp:{again.serial}" != first.address
        second = _register(farm, f"tcp:{again.serial}")
    assert second.id == first.id and second.serial == first.serial
    assert second.address == f"tcp:{again.serial}"
    assert [r.id for r in _rows(farm) if r.serial == first.serial] == [first.id]


def test_another_phone_at_a_known_address_takes_it_over(farm: Farm, tmp_path: Path) -> None:
    with EmulatedPhone("pixel-3a", root=tmp_path / "a") as a:
        port = a.port
        old = _register(farm, f"tcp:{a.serial}")
    with EmulatedPhone("dimensity-9200", root=tmp_path / "b", port=port) as b:
        new = _register(farm, f"tcp:{b.serial}")
    assert new.id != old.id and new.serial != old.serial
    assert new.address == f"tcp:127.0.0.1:{port}"
    with farm.sessions() as session:
        gone = session.get(Device, old.id)
        assert gone is not None
        assert gone.address.startswith(f"gone:{old.id}:")
        assert gone.health == DeviceHealth.bad and new.serial in (gone.health_reason or "")


def test_a_row_without_serial_is_adopted_at_its_address(farm: Farm, tmp_path: Path) -> None:
    with EmulatedPhone("pixel-3a", root=tmp_path / "c") as phone:
        address = f"tcp:{phone.serial}"
        with farm.sessions() as session:
            legacy = Device(address=address, model_name="registered before serials")
            session.add(legacy)
            session.commit()
            legacy_id = legacy.id
        row = _register(farm, address)
    assert row.id == legacy_id and row.serial and row.address == address
