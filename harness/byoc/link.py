"""How BYOC artifacts are compiled and linked: the host reference driver, or a phone's library.

Host builds compile the generated C against ``driver/include`` and link the reference driver
(built once into a static archive, cached by the hash of its sources); a cross-compiled build
(``linux-arm64``, the arm64 emulated phone) does the same with its cross toolchain. Android
builds compile the same C and link the phone's real library instead: ``-lneuralnetworks``
(the NDK ships its stub from API level 27) or the Neuron adapter library given by the
``neuron_lib`` option or ``EDGEFARM_NEURON_LIB``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.config import get_settings
from harness.errors import HarnessBug, JobError, one_line
from harness.jsontypes import BackendOptions
from harness.toolchain import CrossToolchain

log = logging.getLogger(__name__)

DRIVER_DIR = Path(__file__).resolve().parent / "driver"
INCLUDE_DIR = DRIVER_DIR / "include"
NEURON_LIB_ENV = "EDGEFARM_NEURON_LIB"


def driver_sources() -> list[Path]:
    """The reference driver's C sources; a package without them is broken, not the model."""
    sources = sorted((DRIVER_DIR / "src").glob("*.c"))
    if not sources or not (INCLUDE_DIR / "edgefarm_nn.h").is_file():
        raise HarnessBug(
            f"the BYOC reference driver's sources are missing from {DRIVER_DIR}: this "
            "installation of edgefarm is incomplete, reinstall it"
        )
    return sources


def _driver_hash() -> str:
    digest = hashlib.sha256()
    for path in [
        *driver_sources(),
        *sorted(INCLUDE_DIR.glob("*.h")),
        *sorted((DRIVER_DIR / "src").glob("*.h")),
    ]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    # ef_rules.h, as this process generates it (not the file its table came from: the archive
    # must hold the table its name says).
    from harness.byoc.api_rules import c_header

    digest.update(c_header().encode())
    return digest.hexdigest()[:16]


def write_rules_header(directory: Path) -> Path:
    """``ef_rules.h``, the APIs' rules table the driver enforces (:mod:`.api_rules`), written
    into ``directory``: one table for the translator and the driver."""
    from harness.byoc.api_rules import c_header

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ef_rules.h"
    path.write_text(c_header())
    return path


def driver_level(options: BackendOptions | None) -> int:
    """The NNAPI feature level the host driver is built for: the one the artifact targets
    (so the host behaves as a phone of that level), the newest for Neuron."""
    from harness.byoc.api_rules import MAX_FEATURE_LEVEL

    given = (options or {}).get("feature_level")
    if given is None:
        return MAX_FEATURE_LEVEL
    try:
        level = int(str(given))
    except ValueError:
        raise JobError("link", f"feature_level must be an integer, not {given!r}") from None
    if not 1 <= level <= MAX_FEATURE_LEVEL:
        raise JobError("link", f"feature_level {level} is not an NNAPI feature level (1..8)")
    return level


def _compile_flags(level: int, rules_dir: Path) -> list[str]:
    return [
        "-std=gnu11",
        "-O2",
        "-fPIC",
        f"-DEF_NNAPI_FEATURE_LEVEL={level}",
        f"-I{INCLUDE_DIR}",
        f"-I{rules_dir}",
    ]


def byoc_version() -> str:
    """A hash of the BYOC code (this package and the driver) that shapes an artifact."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(_driver_hash().encode())
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def host_driver_archive(toolchain: CrossToolchain | None = None, level: int = 8) -> Path:
    """The reference driver as a static archive for this machine, or cross-compiled by
    ``toolchain`` (a device of another instruction set), its NNAPI runtime at feature
    ``level``; built once per source version and level."""
    out_dir = get_settings().home / "byoc"
    flavour = "" if toolchain is None else f"{toolchain.triple}-"
    archive = out_dir / f"libedgefarm_nn-{flavour}fl{level}-{_driver_hash()}.a"
    if archive.exists():
        return archive
    cc = "gcc" if toolchain is None else toolchain.tool("gcc", stage="link")
    ar = "ar" if toolchain is None else toolchain.tool("ar", stage="link")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgefarm-nn-", dir=out_dir) as tmp:
        objects = []
        write_rules_header(Path(tmp))
        for source in driver_sources():
            obj = Path(tmp) / (source.stem + ".o")
            _run(
                [
                    cc,
                    *_compile_flags(level, Path(tmp)),
                    "-fvisibility=hidden",
                    "-c",
                    str(source),
                    "-o",
                    str(obj),
                ],
                what=f"compiling the reference driver ({source.name})",
            )
            objects.append(str(obj))
        staged = Path(tmp) / archive.name
        _run([ar, "rcs", str(staged), *objects], what="archiving the reference driver")
        os.replace(staged, archive)  # atomic: concurrent builds agree on the result
    log.info("built the BYOC reference driver %s", archive)
    return archive


def host_driver_shared(level: int) -> Path:
    """The reference driver as a shared library exporting the APIs' functions, its NNAPI
    runtime at feature ``level`` (for programs that load it, as tests do with ctypes)."""
    out_dir = get_settings().home / "byoc"
    lib = out_dir / f"libedgefarm_nn-fl{level}-{_driver_hash()}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgefarm-nn-", dir=out_dir) as tmp:
        write_rules_header(Path(tmp))
        staged = Path(tmp) / lib.name
        _run(
            [
                "gcc",
                *_compile_flags(level, Path(tmp)),
                "-shared",
                *[str(s) for s in driver_sources()],
                "-o",
                str(staged),
                "-lm",
            ],
            what="building the reference driver",
        )
        os.replace(staged, lib)
    return lib


def _run(cmd: list[str], *, what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JobError("link", f"{what} failed: {one_line(str(exc))}") from None
    if proc.returncode != 0:
        raise JobError("link", f"{what} failed: {one_line(proc.stderr or proc.stdout)}")


def host_export_options(
    toolchain: CrossToolchain | None = None, options: BackendOptions | None = None
) -> list[str]:
    """Extra ``export_library`` options of a build linked with the reference driver (by this
    machine's compiler, or by a cross ``toolchain``): driver header and archive, the driver's
    NNAPI runtime at the feature level ``options`` target."""
    # export_library may put options before the generated sources: take the whole archive so
    # that the link does not depend on the order.
    archive = host_driver_archive(toolchain, driver_level(options))
    return [
        f"-I{INCLUDE_DIR}",
        "-Wl,--whole-archive",
        str(archive),
        "-Wl,--no-whole-archive",
        "-lm",
        "-lpthread",
    ]


def android_link_args(dialect: str, options: BackendOptions) -> list[str]:
    """Extra NDK arguments of a phone build: the vendor's header and library. The generated C
    includes ``<android/NeuralNetworks.h>`` (the NDK's) or ``NeuronAdapter.h`` (NeuroPilot's)
    on Android, never the reference driver's header."""
    driver_sources()  # the package must be whole
    if dialect == "nnapi":
        # libneuralnetworks.so is an NDK system library from API level 27.
        return ["-lneuralnetworks"]
    given = options.get("neuron_lib") or os.environ.get(NEURON_LIB_ENV)
    if not given:
        raise JobError(
            "link",
            "tvm-neuron for a phone links against MediaTek's Neuron adapter library "
            f"(libneuron_adapter.so): pass the option neuron_lib=PATH or set {NEURON_LIB_ENV}",
        )
    lib = Path(str(given))
    if not lib.is_file():
        raise JobError(
            "link",
            f"the Neuron adapter library {lib} does not exist (option neuron_lib / "
            f"{NEURON_LIB_ENV})",
        )
    include = neuron_include_dir(options, lib)
    return [f"-I{include}", str(lib), f"-Wl,-rpath-link,{lib.parent}"]


NEURON_INCLUDE_ENV = "EDGEFARM_NEURON_INCLUDE"


def neuron_include_dir(options: BackendOptions, lib: Path) -> Path:
    """The directory holding MediaTek's ``NeuronAdapter.h``: the option ``neuron_include``,
    ``EDGEFARM_NEURON_INCLUDE``, or next to the library (its directory, ``include`` beside
    or above it, as the NeuroPilot SDK lays them out)."""
    given = options.get("neuron_include") or os.environ.get(NEURON_INCLUDE_ENV)
    if given:
        where = Path(str(given))
        if not (where / "NeuronAdapter.h").is_file():
            raise JobError(
                "link",
                f"{where} holds no NeuronAdapter.h (option neuron_include / {NEURON_INCLUDE_ENV})",
            )
        return where
    for where in (lib.parent, lib.parent / "include", lib.parent.parent / "include"):
        if (where / "NeuronAdapter.h").is_file():
            return where
    raise JobError(
        "link",
        "tvm-neuron for a phone compiles against MediaTek's NeuronAdapter.h (NeuroPilot SDK): "
        f"pass the option neuron_include=DIR or set {NEURON_INCLUDE_ENV} (none found next to "
        f"{lib})",
    )


def compiler_available(cc: str = "gcc") -> bool:
    return shutil.which(cc) is not None
