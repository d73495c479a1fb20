"""A night's toolchain: everything that may change a series' numbers from one night to the next
without the series itself changing, recorded so that an alert can say what changed.

Per night: the TVM version, edgefarm's version and git commit, and per device its build
fingerprint and NNAPI feature level; per series: the model version (sha256), the compile
options, the runner version. :func:`differences` lists what differs between two nights of one
series, in the words an alert uses ("model version changed").
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from harness import __version__
from harness.compile.build import tvm_version


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the edgefarm checkout this runs from; None for an installed package."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class DeviceBuild(BaseModel):
    """A device's software as a night saw it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str = ""
    nnapi_feature_level: int | None = None


class Toolchain(BaseModel):
    """What one series ran with on one night."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tvm: str
    edgefarm: str
    commit: str | None = None
    model_sha256: str | None = None
    model_version: int | None = None  # the n-th upload under the model's name
    device: DeviceBuild = Field(default_factory=DeviceBuild)
    options: dict[str, JsonValue] = Field(default_factory=dict)
    runner: str | None = None


def current(**series: object) -> Toolchain:
    """This farm's toolchain, with ``series``' own parts (model, device, options)."""
    return Toolchain.model_validate(
        {"tvm": tvm_version(), "edgefarm": __version__, "commit": git_commit(), **series}
    )


_WORDS = {
    "tvm": "TVM version changed",
    "edgefarm": "edgefarm version changed",
    "commit": "edgefarm commit changed",
    "model_sha256": "model version changed",
    "options": "compile options changed",
    "runner": "runner changed",
}


def differences(before: Toolchain, after: Toolchain) -> list[dict[str, JsonValue]]:
    """What changed from ``before`` to ``after``: one entry per part, with both values."""
    changes: list[dict[str, JsonValue]] = []
    for name, words in _WORDS.items():
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            changes.append({"what": name, "change": words, "before": old, "after": new})
    if before.device.fingerprint != after.device.fingerprint:
        changes.append(
            {
                "what": "device.fingerprint",
                "change": "phone build changed (OS update?)",
                "before": before.device.fingerprint,
                "after": after.device.fingerprint,
            }
        )
    if before.device.nnapi_feature_level != after.device.nnapi_feature_level:
        changes.append(
            {
                "what": "device.nnapi_feature_level",
                "change": "NNAPI feature level changed",
                "before": before.device.nnapi_feature_level,
                "after": after.device.nnapi_feature_level,
            }
        )
    return changes
