"""The pages' third-party assets: fetched from the npm registry by the project's own set-up,
never kept in the repository, and served by the farm itself (labs are offline: no CDN).

One asset today: uPlot (MIT), the charting library of the history, canary and histogram
charts. Pinned here: its version, the registry's ``sha512`` integrity of the tarball, and the
sha256 of each file taken out of it. An installed copy counts only when every file matches its
sha256, so a half-written or tampered directory is never served.

Where it goes: ``api/web/static/vendor/uplot-VERSION/`` beside this module (git-ignored in a
checkout; inside site-packages for an installed wheel or the Docker image), or, when that
directory is not writable, ``$EDGEFARM_HOME/web/vendor/uplot-VERSION/``. The farm looks in
both, in that order.

    python -m api.web.assets                      # install (nothing to do when verified)
    python -m api.web.assets --check              # exit 1 when it is missing
    python -m api.web.assets --tarball FILE.tgz   # offline: from a copy of the tarball

The registry is ``https://registry.npmjs.org`` unless ``npm_config_registry`` (npm's own
variable) names a mirror.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.config import get_settings

PACKAGE_VENDOR = Path(__file__).parent / "static" / "vendor"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
INSTALL_COMMAND = "python -m api.web.assets"
DOWNLOAD_TIMEOUT_S = 60.0
MAX_TARBALL_BYTES = 16 * 1024 * 1024


class AssetError(Exception):
    """An asset could not be installed: the message says what and what to do."""


@dataclass(frozen=True)
class NpmAsset:
    """A package of the npm registry pinned to one version and one tarball."""

    name: str
    version: str
    integrity: str  # the registry's ``dist.integrity``: ``sha512-<base64>``
    files: dict[str, str]  # file name served -> sha256 of its bytes
    members: dict[str, str]  # file name served -> its path inside the tarball

    @property
    def directory(self) -> str:
        return f"{self.name}-{self.version}"

    def tarball_url(self, registry: str = DEFAULT_REGISTRY) -> str:
        base = registry.rstrip("/")
        return f"{base}/{self.name}/-/{self.name}-{self.version}.tgz"


UPLOT = NpmAsset(
    name="uplot",
    version="1.6.32",
    integrity=(
        "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/"
        "ep3tOkyTxpiQIw=="
    ),
    files={
        "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
        "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
        # Kept (and served) beside the code it licenses.
        "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
    },
    members={
        "uPlot.iife.min.js": "package/dist/uPlot.iife.min.js",
        "uPlot.min.css": "package/dist/uPlot.min.css",
        "LICENSE": "package/LICENSE",
    },
)
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", "": "text/plain; charset=utf-8"}


def media_type(name: str) -> str:
    return MEDIA_TYPES[Path(name).suffix]


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _verified(directory: Path, asset: NpmAsset) -> bool:
    return all(_sha256(directory / name) == digest for name, digest in asset.files.items())


def home_vendor(home: Path) -> Path:
    """The fallback place under ``EDGEFARM_HOME``."""
    return home / "web" / "vendor"


def candidates(asset: NpmAsset, home: Path | None) -> list[Path]:
    """Where the farm looks for ``asset``, in order."""
    places = [PACKAGE_VENDOR / asset.directory]
    if home is not None:
        places.append(home_vendor(home) / asset.directory)
    return places


# Directories already verified (a file served is read from disk each time, not cached).
_found: dict[tuple[str, str], Path] = {}


def find(asset: NpmAsset = UPLOT, home: Path | None = None) -> Path | None:
    """The directory of a verified copy of ``asset``, or None when it is not installed."""
    for directory in candidates(asset, home):
        key = (asset.directory, str(directory))
        if key in _found:
            if all((directory / name).is_file() for name in asset.files):
                return directory
            del _found[key]
        if _verified(directory, asset):
            _found[key] = directory
            return directory
    return None


def check_integrity(data: bytes, integrity: str) -> None:
    """Raise AssetError unless ``data`` has the npm ``integrity`` (``sha512-<base64>``)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise AssetError(f"integrity {integrity!r} is not of the form sha512-<base64>")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise AssetError(
            f"the tarball's sha512 is {actual}, not the pinned {expected}: "
            "refusing a tarball that is not the one pinned"
        )


def download(url: str) -> bytes:
    """The bytes at ``url`` (at most :data:`MAX_TARBALL_BYTES`)."""
    request = urllib.request.Request(url, headers={"User-Agent": "edgefarm-setup"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data: bytes = response.read(MAX_TARBALL_BYTES + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AssetError(
            f"could not download {url}: {reason}. Without network, fetch that file elsewhere "
            f"and run {INSTALL_COMMAND} --tarball FILE"
        ) from exc
    if len(data) > MAX_TARBALL_BYTES:
        raise AssetError(f"{url} is larger than {MAX_TARBALL_BYTES} bytes: not the tarball pinned")
    return data


def extract(data: bytes, asset: NpmAsset, directory: Path) -> None:
    """Write the asset's files out of the tarball ``data`` (its integrity already checked)
    into ``directory``, each checked against its sha256, each written whole or not at all."""
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for name, member in asset.members.items():
                handle = archive.extractfile(member)
                if handle is None:
                    raise AssetError(f"{member} in the {asset.name} tarball is not a file")
                contents[name] = handle.read()
    except (tarfile.TarError, KeyError) as exc:
        raise AssetError(f"the {asset.name} tarball cannot be read: {exc}") from exc
    for name, body in contents.items():
        digest = hashlib.sha256(body).hexdigest()
        if digest != asset.files[name]:
            raise AssetError(f"{name} in the tarball has sha256 {digest}, not the pinned one")
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in contents.items():
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.chmod(temporary, 0o644)
        os.replace(temporary, directory / name)


def _writable(directory: Path) -> bool:
    existing = directory
    while not existing.exists():
        existing = existing.parent
    return os.access(existing, os.W_OK)


def install(
    asset: NpmAsset = UPLOT,
    *,
    home: Path | None = None,
    dest: Path | None = None,
    tarball: Path | None = None,
    registry: str | None = None,
) -> tuple[Path, bool]:
    """Install ``asset`` unless a verified copy is there: (its directory, whether it was
    written now). ``dest`` is the vendor directory (default: the package's when writable,
    else ``home``'s); ``tarball`` a local copy of the tarball instead of the registry's."""
    if dest is None:
        present = find(asset, home)
        if present is not None:
            return present, False
        if _writable(PACKAGE_VENDOR):
            dest = PACKAGE_VENDOR
        elif home is not None:
            dest = home_vendor(home)
        else:
            raise AssetError(f"{PACKAGE_VENDOR} is not writable: give --dest or EDGEFARM_HOME")
    directory = dest / asset.directory
    if _verified(directory, asset):
        return directory, False
    if tarball is not None:
        try:
            data = tarball.read_bytes()
        except OSError as exc:
            raise AssetError(f"cannot read the tarball {tarball}: {exc.strerror}") from exc
    else:
        # npm's own variable, lower case as npm documents it.
        mirror = os.environ.get("npm_config_registry")  # noqa: SIM112
        base = registry or mirror or DEFAULT_REGISTRY
        data = download(asset.tarball_url(base))
    check_integrity(data, asset.integrity)
    extract(data, asset, directory)
    return directory, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=INSTALL_COMMAND,
        description=f"Install the web pages' charting library (uPlot {UPLOT.version}) from the "
        "npm registry, verified against its pinned integrity.",
    )
    parser.add_argument("--check", action="store_true", help="only say whether it is installed")
    parser.add_argument("--tarball", type=Path, help=f"a local copy of {UPLOT.tarball_url()}")
    parser.add_argument("--dest", type=Path, help="the vendor directory to install into")
    parser.add_argument("--registry", help="the npm registry (default: $npm_config_registry)")
    args = parser.parse_args(argv)
    home = get_settings().home
    if args.check:
        found = find(UPLOT, home)
        if found is None:
            places = ", ".join(str(p) for p in candidates(UPLOT, home))
            missing = f"uPlot {UPLOT.version} is not installed (looked in {places})"
            print(f"{missing}; run {INSTALL_COMMAND}")
            return 1
        print(f"uPlot {UPLOT.version}: {found}")
        return 0
    try:
        directory, written = install(
            UPLOT, home=home, dest=args.dest, tarball=args.tarball, registry=args.registry
        )
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"uPlot {UPLOT.version} {'installed in' if written else 'already in'} {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
