"""A fresh farm home for the tests that start ``edgefarm up`` as a user does, with the native
runner already in its cache.

Every such test starts from an empty EDGEFARM_HOME, so each farm's workers built the same
runner again (on the first run of each phone's worker, two at once) and, with the arm64 phone,
downloaded the aarch64 TVM wheels and cross-compiled its runner: some 20-60 s per farm on two
shared cores, measuring nothing the tests check. The runner builds themselves are tested in
tests/harness/runner; here the bundles are built once per test run, in the run's shared cache
(tests/conftest.py), and copied into each fresh home's cache, where the farm finds them as it
would after its own first run. The artifact cache stays empty: models are still compiled by
the farm under test."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from harness.config import get_settings
from harness.devices.deploy import runtime_bundle
from harness.errors import EdgefarmError

# What harness.runner.build and harness.runner.cross keep under a cache directory (their keys
# hash the sources, flags and versions, not the cache's path).
RUNNER_CACHE_DIRS = ("runner", "runner-linux-arm64", "wheels", "runtime-libs")


def seed_runner_cache(home: Path, targets: tuple[str, ...] = ("host",)) -> None:
    """Build the runtime bundles of ``targets`` in the shared test cache (once per run) and
    copy them into ``home``'s cache. A bundle that cannot be built here (no network for the
    aarch64 wheels) is left to the farm, which then fails as it would have without this."""
    for target in targets:
        with contextlib.suppress(EdgefarmError):
            runtime_bundle(target)
    shared = get_settings().cache_path
    cache = home / "cache"
    for name in RUNNER_CACHE_DIRS:
        if (shared / name).is_dir():
            shutil.copytree(
                shared / name,
                cache / name,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".build-*", ".download-*", ".extract-*"),
                copy_function=_link_or_copy,  # the aarch64 wheels are ~100 MB
            )


def _link_or_copy(source: str, destination: str) -> None:
    """A hard link where both are on one filesystem (the caches only ever add files and
    rename them into place, never write into one), a copy elsewhere."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
