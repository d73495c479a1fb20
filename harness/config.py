"""Settings, from ``EDGEFARM_*`` environment variables (nested with ``__``).

There is no module-level instance: call :func:`get_settings`; tests override it by setting
variables and calling ``get_settings.cache_clear()``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from harness.measure.protocol import (
    DEFAULTS,
    MaxSeconds,
    MeasurementSettings,
    MinIterations,
    MinSeconds,
    Seed,
    Warmup,
)


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("edgefarm", appauthor=False))


class Settings(BaseSettings):
    """Everything edgefarm can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="EDGEFARM_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=_default_home, description="state of this machine's farm")
    cache_dir: Path | None = Field(default=None, description="artifact cache; default HOME/cache")
    config_dir: Path | None = Field(
        default=None, description="keys and tokens; default HOME/config"
    )

    # The farm (see DESIGN.md "Data flow"). Empty: the embedded default under HOME.
    database_url: str | None = Field(default=None, description="SQLAlchemy URL")
    broker_url: str | None = Field(default=None, description="Celery broker URL")
    api_url: str = "http://127.0.0.1:8000"
    api_token: str | None = None
    api_reads_need_token: bool = False  # writes always need a bearer token
    max_upload_mb: int = Field(default=512, ge=1)
    # What one benchmark may ask a phone to hold: every model input, once its dynamic
    # dimensions are given, is checked at submission (and again where a model is prepared).
    max_input_mb: int = Field(default=256, ge=1, description="bytes of one input")
    max_inputs_mb: int = Field(default=256, ge=1, description="bytes of all inputs together")
    max_input_elements: int = Field(
        default=2**26, ge=1, description="elements of one input (random inputs are made in 64 bits)"
    )
    worker_name: str | None = None
    lease_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a run, a device lease or a farm process (worker, beat) not heard from for "
        "this long is taken to be dead; heartbeats come every heartbeat_s",
    )
    max_run_attempts: int = 3

    # Workers (read only by the Celery side; see workers/settings.py for derived values).
    reap_interval_s: float = Field(default=10.0, gt=0, description="how often beat sends reap")
    queued_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="a queued run due this long ago, whose device has a live worker and has "
        "been idle as long, is taken to have lost its message and is sent again",
    )
    no_worker_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="a queued run whose device has had no live worker for this long ends "
        "failed (instead of waiting for a worker that may never come)",
    )
    # Webhooks (harness.regression.webhooks): a delivery that fails is tried again after
    # backoff_s * 2**(attempts - 1), at most backoff_max_s, and ends failed after max_attempts.
    webhook_interval_s: float = Field(default=5.0, gt=0, description="how often beat delivers")
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60, description="one POST, at most")
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    worker_restart_limit: int = Field(
        default=5,
        ge=0,
        description="restarts of one farm process within worker_restart_window_s before its "
        "supervisor gives up and reports it down",
    )
    worker_restart_window_s: float = Field(default=600.0, gt=0)
    health_recheck_s: float = Field(
        default=60.0,
        gt=0,
        description="how often a worker health-checks its devices that a check found bad",
    )
    worker_restart_backoff_max_s: float = Field(
        default=30.0, gt=0, description="the longest wait before restarting a process"
    )
    busy_retry_s: float = Field(default=5.0, gt=0, description="wait when the device is leased")
    busy_max_wait_s: float = Field(
        default=6 * 3600.0, gt=0, description="give a run's message back to the reaper after"
    )
    retry_backoff_max_s: float = Field(default=120.0, gt=0)
    heartbeat_s: float | None = Field(
        default=None, gt=0, description="default: a sixth of the lease timeout, at most 5 s"
    )
    visibility_timeout_s: float | None = Field(
        default=None, gt=0, description="Redis redelivery; default: well above the longest task"
    )

    # Nightly regression runs (harness.regression): how often beat looks for due nights, and
    # what the change detector takes for a change (figures: bench/regression.py, README).
    nightly_tick_s: float = Field(default=15.0, gt=0, description="how often due nights start")
    detect_max_pvalue: float = Field(default=0.001, gt=0, lt=1)
    detect_min_effect: float = Field(default=0.03, ge=0, description="relative, 0.03 = 3%")
    detect_window: int = Field(default=60, ge=4, description="nights a series is judged on")
    detect_recent: int = Field(
        default=2, ge=1, description="a change must start within the last this many nights"
    )
    # The A/B confirmation of a suspected regression (harness.farm.confirm): pairs of
    # interleaved blocks on the series' phone (0: no confirmation, alerts are notified as
    # found), and what the paired test calls a difference.
    confirm_blocks: int = Field(default=10, ge=0, le=200, description="0: no A/B confirmation")
    confirm_max_blocks: int = Field(
        default=20, ge=0, le=200, description="an inconclusive A/B is repeated up to this many"
    )
    confirm_alpha: float = Field(default=0.01, gt=0, lt=1)
    confirm_min_effect: float = Field(default=0.01, ge=0, description="relative, 0.01 = 1%")

    # The farm's measurement defaults (a benchmark's knobs left out), within the bounds of
    # harness.measure.protocol and by default its defaults: see measurement().
    warmup: Warmup = DEFAULTS.warmup
    min_iterations: MinIterations = DEFAULTS.min_iterations
    min_seconds: MinSeconds = DEFAULTS.min_seconds
    max_seconds: MaxSeconds = DEFAULTS.max_seconds
    seed: Seed = DEFAULTS.seed
    run_timeout_s: float = 120.0  # beyond the protocol's max_seconds
    compile_timeout_s: float = 1800.0
    # Builds are forked from a compile server that imported TVM once (harness.compile.forkserver);
    # off, each build starts a fresh interpreter.
    compile_forkserver: bool = True
    # The CPU the ``host`` target generates code for (LLVM's -mcpu): "auto" is this machine's
    # x86-64 level (x86-64-v2/v3/v4, from its CPU flags), "generic" none, else an LLVM CPU name.
    host_cpu: str = Field(default="auto", min_length=1, max_length=40)

    # Devices.
    devices: list[str] = Field(
        default_factory=list, description='addresses, e.g. ["tcp:127.0.0.1:5555"]'
    )
    adb_timeout_s: float = 30.0
    adb_transfer_timeout_s: float = 600.0
    emulator_isolation: Literal["namespace", "auto", "rewrite"] = Field(
        default="namespace",
        description="how edgefarm up's emulated phones confine commands: namespace (refuse "
        "to start where the kernel cannot), auto (else rewrite paths: NOT confined), rewrite",
    )
    cooldown_max_temp_c: float = 45.0
    cooldown_max_wait_s: float = 120.0
    device_cache_cap_mb: int = 512

    # Android builds.
    android_ndk_home: Path | None = Field(
        default=None, validation_alias=AliasChoices("EDGEFARM_ANDROID_NDK_HOME", "ANDROID_NDK_HOME")
    )
    android_api_level: int = 28

    def measurement(self) -> MeasurementSettings:
        """The measurement settings a benchmark gets for every knob it leaves out. A
        ProtocolLimitError when they do not fit together (max_seconds below min_seconds)."""
        return MeasurementSettings.checked(
            warmup=self.warmup,
            min_iterations=self.min_iterations,
            min_seconds=self.min_seconds,
            max_seconds=self.max_seconds,
            seed=self.seed,
        )

    @property
    def cache_path(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def models_path(self) -> Path:
        return self.home / "models"

    @property
    def config_path(self) -> Path:
        return self.config_dir or self.home / "config"


@lru_cache
def get_settings() -> Settings:
    return Settings()
