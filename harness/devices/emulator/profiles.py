"""Device profiles: what an emulated phone says it is, and how its hardware behaves.

Each profile mirrors a real phone's system properties (as ``getprop`` prints them), its CPU
clusters and thermal zones. Every profile also says it is emulated: ``ro.edgefarm.emulated=1``,
``(edgefarm emulated)`` in the model and ``edgefarm_emulated`` in the product name and
fingerprint, so facts read from one can never be mistaken for a physical phone's. A profile's
``isa`` says what its programs are built for: ``host`` (this machine's binaries: then
``ro.product.cpu.abi`` keeps the real phone's ABI while ``ro.edgefarm.exec_abi`` names the ABI
that actually executes, ``x86_64`` here) or ``arm64`` (aarch64 binaries, executed under
qemu-user where this machine is not arm64; :mod:`.isa`). ``ro.edgefarm.target`` names the
compile target whose programs the phone runs.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace

from .isa import SPECS, Isa

EMULATED_SUFFIX = " (edgefarm emulated)"


def host_exec_abi() -> str:
    """The Android ABI name of the machine the emulator runs on."""
    machine = platform.machine().lower()
    return {
        "x86_64": "x86_64",
        "amd64": "x86_64",
        "aarch64": "arm64-v8a",
        "arm64": "arm64-v8a",
        "i686": "x86",
        "i386": "x86",
    }.get(machine, machine)


@dataclass(frozen=True)
class CpuCluster:
    """``count`` cores with one frequency range (kHz, as cpufreq reports it)."""

    count: int
    min_khz: int
    max_khz: int
    governor: str = "schedutil"


@dataclass(frozen=True)
class ThermalZone:
    """A thermal zone: sysfs ``type`` and how far from the die it reads once warm.

    Zone 0 of every profile has no offset and lag 1: it reads the die temperature, which is
    what ``EmulatedPhone.set_temperature`` sets."""

    type: str
    offset_c: float = 0.0
    lag: float = 1.0  # 1.0 follows the die, smaller values stay closer to ambient (skin, battery)


@dataclass(frozen=True)
class DeviceProfile:
    """Everything that makes one kind of emulated phone."""

    name: str
    props: dict[str, str]
    clusters: tuple[CpuCluster, ...]
    thermal_zones: tuple[ThermalZone, ...]
    ambient_c: float = 25.0
    idle_rise_c: float = 6.0  # idle equilibrium above ambient
    load_rise_c: float = 30.0  # extra equilibrium rise with one busy shell command
    throttle_c: float = 70.0  # above this, big cores lose frequency
    battery_capacity: int = 85
    battery_technology: str = "Li-poly"
    isa: Isa = "host"  # what its programs are built for (see the module doc)

    @property
    def cpu_count(self) -> int:
        return sum(c.count for c in self.clusters)

    @property
    def model(self) -> str:
        return self.props["ro.product.model"]

    def with_isa(self, isa: Isa) -> DeviceProfile:
        """The same phone running ``isa`` programs: ``arm64`` executes aarch64 binaries (and
        is named ``<profile>-arm64``, its model ``... (edgefarm emulated arm64)``)."""
        if isa == self.isa:
            return self
        if isa == "host":
            raise ValueError(f"profile {self.name} is an {self.isa} phone already")
        spec = SPECS[isa]
        props = dict(self.props)
        name = f"{self.name}-{isa}"
        props["ro.product.model"] = props["ro.product.model"].replace(
            EMULATED_SUFFIX, f" (edgefarm emulated {isa})"
        )
        props["ro.edgefarm.exec_abi"] = spec.abi
        props["ro.edgefarm.target"] = spec.target
        props["ro.edgefarm.profile"] = name
        return replace(self, name=name, props=props, isa=isa)


def _build_props(
    *,
    manufacturer: str,
    brand: str,
    model: str,
    name: str,
    device: str,
    board: str,
    hardware: str,
    release: str,
    sdk: int,
    build_id: str,
    incremental: str,
    security_patch: str,
    first_api_level: int,
    soc_manufacturer: str | None,
    soc_model: str | None,
    extra: dict[str, str],
) -> dict[str, str]:
    product = f"{name}_edgefarm_emulated"
    fingerprint = f"{brand}/{product}/{device}:{release}/{build_id}/{incremental}:user/release-keys"
    props = {
        "ro.product.manufacturer": manufacturer,
        "ro.product.brand": brand,
        "ro.product.model": model + EMULATED_SUFFIX,
        "ro.product.name": product,
        "ro.product.device": device,
        "ro.product.board": board,
        "ro.board.platform": board,
        "ro.hardware": hardware,
        "ro.product.cpu.abi": "arm64-v8a",
        "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
        "ro.product.cpu.abilist64": "arm64-v8a",
        "ro.product.cpu.abilist32": "armeabi-v7a,armeabi",
        "ro.product.first_api_level": str(first_api_level),
        "ro.product.locale": "en-US",
        "ro.build.version.release": release,
        "ro.build.version.sdk": str(sdk),
        "ro.build.version.security_patch": security_patch,
        "ro.build.version.incremental": incremental,
        "ro.build.version.codename": "REL",
        "ro.build.id": build_id,
        "ro.build.display.id": f"{build_id} release-keys",
        "ro.build.type": "user",
        "ro.build.tags": "release-keys",
        "ro.build.characteristics": "default",
        "ro.build.fingerprint": fingerprint,
        "ro.vendor.build.fingerprint": fingerprint,
        "ro.bootimage.build.fingerprint": fingerprint,
        "ro.debuggable": "0",
        "ro.secure": "1",
        "ro.adb.secure": "1",
        "ro.kernel.qemu": "0",
        "sys.boot_completed": "1",
        "dev.bootcomplete": "1",
        "init.svc.adbd": "running",
        "persist.sys.timezone": "Etc/UTC",
        "ro.edgefarm.emulated": "1",
        "ro.edgefarm.exec_abi": host_exec_abi(),
        "ro.edgefarm.target": "host",
    }
    # ro.soc.* exist since Android 12 (sdk 31); older phones only have board/hardware.
    if soc_manufacturer is not None and soc_model is not None:
        props["ro.soc.manufacturer"] = soc_manufacturer
        props["ro.soc.model"] = soc_model
    props.update(extra)
    return props


def _dimensity_9200() -> DeviceProfile:
    props = _build_props(
        manufacturer="vivo",
        brand="vivo",
        model="X90 Pro",
        name="PD2242",
        device="PD2242",
        board="mt6985",
        hardware="mt6985",
        release="14",
        sdk=34,
        build_id="UP1A.231005.007",
        incremental="compiler12.0.23.3",
        security_patch="2024-01-01",
        first_api_level=33,
        soc_manufacturer="Mediatek",
        soc_model="MT6985",
        extra={
            "ro.hardware.egl": "mali",
            "ro.hardware.vulkan": "mali",
            "ro.vendor.mediatek.platform": "MT6985",
            "ro.edgefarm.profile": "dimensity-9200",
        },
    )
    return DeviceProfile(
        name="dimensity-9200",
        props=props,
        # Cortex-A510 x4, Cortex-A715 x3, Cortex-X3 x1
        clusters=(
            CpuCluster(4, 480_000, 1_800_000),
            CpuCluster(3, 650_000, 2_850_000),
            CpuCluster(1, 725_000, 3_050_000),
        ),
        thermal_zones=(
            ThermalZone("soc_max"),  # the hottest sensor: the die itself
            ThermalZone("cpu-little-core0", -4.0),
            ThermalZone("cpu-big-core4", -1.5),
            ThermalZone("cpu-big-core7", -0.5),
            ThermalZone("gpu0", -2.0),
            ThermalZone("apu", -3.0),
            ThermalZone("battery", 0.0, lag=0.4),
            ThermalZone("board_ntc", 0.0, lag=0.6),
        ),
        battery_capacity=88,
    )


def _snapdragon_8_gen_2() -> DeviceProfile:
    props = _build_props(
        manufacturer="samsung",
        brand="samsung",
        model="SM-S911B",
        name="dm1q",
        device="dm1q",
        board="kalama",
        hardware="qcom",
        release="13",
        sdk=33,
        build_id="TP1A.220624.014",
        incremental="S911BXXU2AWF1",
        security_patch="2023-06-01",
        first_api_level=33,
        soc_manufacturer="QTI",
        soc_model="SM8550",
        extra={
            "ro.hardware.egl": "adreno",
            "ro.hardware.vulkan": "adreno",
            "ro.edgefarm.profile": "snapdragon-8-gen-2",
        },
    )
    return DeviceProfile(
        name="snapdragon-8-gen-2",
        props=props,
        # Cortex-A510 x3, Cortex-A710 x2 + A715 x2, Cortex-X3 x1
        clusters=(
            CpuCluster(3, 307_200, 2_016_000),
            CpuCluster(4, 499_200, 2_803_200),
            CpuCluster(1, 595_200, 3_360_000),
        ),
        thermal_zones=(
            ThermalZone("cpu-1-8-0"),  # the prime core, hottest: the die itself
            ThermalZone("cpu-0-0-0", -4.0),
            ThermalZone("cpu-1-0-0", -1.5),
            ThermalZone("cpu-1-2-0", -1.0),
            ThermalZone("gpuss-0", -2.0),
            ThermalZone("nsphvx-0", -3.0),
            ThermalZone("battery", 0.0, lag=0.4),
            ThermalZone("skin-msm-therm", 0.0, lag=0.5),
        ),
        battery_capacity=76,
    )


def _pixel_3a() -> DeviceProfile:
    props = _build_props(
        manufacturer="Google",
        brand="google",
        model="Pixel 3a",
        name="sargo",
        device="sargo",
        board="sdm670",
        hardware="sargo",
        release="9",
        sdk=28,
        build_id="PQ3B.190801.002",
        incremental="5674421",
        security_patch="2019-08-01",
        first_api_level=28,
        soc_manufacturer=None,
        soc_model=None,
        extra={"ro.hardware.egl": "adreno", "ro.edgefarm.profile": "pixel-3a"},
    )
    return DeviceProfile(
        name="pixel-3a",
        props=props,
        # Kryo 360: Cortex-A55 x6, Cortex-A75 x2
        clusters=(CpuCluster(6, 300_000, 1_708_800), CpuCluster(2, 300_000, 2_016_000)),
        thermal_zones=(
            ThermalZone("cpu1-gold-usr"),  # the die itself
            ThermalZone("cpu0-silver-usr", -3.0),
            ThermalZone("gpu0-usr", -2.0),
            ThermalZone("battery", 0.0, lag=0.4),
            ThermalZone("xo-therm-adc", 0.0, lag=0.5),
        ),
        load_rise_c=26.0,
        throttle_c=65.0,
        battery_capacity=64,
    )


PROFILES: dict[str, DeviceProfile] = {
    p.name: p for p in (_dimensity_9200(), _snapdragon_8_gen_2(), _pixel_3a())
}
DEFAULT_PROFILE = "dimensity-9200"


def get_profile(name: str) -> DeviceProfile:
    """The profile called ``name`` (``NAME-arm64``: NAME running arm64 programs); KeyError
    names the known ones."""
    for spec in SPECS.values():
        base = name.removesuffix(f"-{spec.name}")
        if base != name and base in PROFILES:
            return PROFILES[base].with_isa(spec.name)
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise KeyError(
            f"unknown emulator profile {name!r}; known: {known} (and each with -arm64)"
        ) from None
