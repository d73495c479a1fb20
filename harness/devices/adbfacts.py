"""What a phone says about itself in ``getprop``: its :class:`DeviceFacts`."""

from __future__ import annotations

import re

from harness.devices.base import DeviceFacts

# The NNAPI feature level each Android SDK level brings (NNAPI appeared in API 27).
_NNAPI_FEATURE_LEVELS = {27: 1, 28: 2, 29: 3, 30: 4, 31: 5, 32: 5, 33: 6, 34: 7, 35: 8}


def nnapi_feature_level(sdk_level: int | None) -> int | None:
    """NNAPI feature level of an SDK level; None when the phone has no NNAPI (below API 27)."""
    if sdk_level is None or sdk_level < 27:
        return None
    return _NNAPI_FEATURE_LEVELS.get(sdk_level, max(_NNAPI_FEATURE_LEVELS.values()))


_PROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        match = _PROP_LINE.match(line.strip())
        if match:
            props[match["key"]] = match["value"]
    return props


def facts_from_props(device_id: str, props: dict[str, str]) -> DeviceFacts:
    """Device facts from ``getprop`` output."""
    sdk_text = props.get("ro.build.version.sdk", "")
    sdk = int(sdk_text) if sdk_text.isdigit() else None
    abi = props.get("ro.product.cpu.abi", "")
    emulated = props.get("ro.edgefarm.emulated") == "1"
    exec_abi = props.get("ro.edgefarm.exec_abi", abi)
    # An emulated phone names the target whose programs it runs; a phone runs Android's.
    target = props.get("ro.edgefarm.target") or (
        "host" if exec_abi in ("x86_64", "x86-64") else "android-arm64"
    )
    isa_emulator = props.get("ro.edgefarm.isa_emulator", "")
    soc = (
        props.get("ro.soc.model")
        or props.get("ro.board.platform")
        or props.get("ro.hardware")
        or ""
    )
    return DeviceFacts(
        id=device_id,
        kind="adb",
        manufacturer=props.get("ro.product.manufacturer", ""),
        model=props.get("ro.product.model", ""),
        soc=soc,
        abi=abi,
        android_release=props.get("ro.build.version.release", ""),
        sdk_level=sdk,
        fingerprint=props.get("ro.build.fingerprint", ""),
        nnapi_feature_level=nnapi_feature_level(sdk),
        emulated=emulated,
        target=target,
        serial=props.get("ro.serialno", ""),
        extra={
            "soc_manufacturer": props.get("ro.soc.manufacturer", ""),
            "platform": props.get("ro.board.platform", ""),
            "serialno": props.get("ro.serialno", ""),
            # An emulated phone says how its commands are confined: namespace | rewrite.
            **(
                {"exec_abi": exec_abi, "sandbox": props.get("ro.edgefarm.sandbox", "")}
                if emulated
                else {}
            ),
            # ... and, when its programs run under an instruction-set emulator, which one.
            **({"isa_emulator": isa_emulator} if emulated and isa_emulator else {}),
        },
    )
