"""Calibration: per-candidate costs measured on a device, stored per device class.

``--partition cost`` needs, for the device class it targets, the CPU and accelerator time of
every offload candidate of the model, the boundary probes and the whole model on the CPU
(see :mod:`harness.byoc.costmodel`). :func:`measured_costs` builds the two calibration
artifacts (:mod:`harness.byoc.candidates`), times on the device only what the store
(:mod:`harness.db.costs`) does not have yet for this device class and software version,
stores it, and returns the costs the partitioner takes as its ``costs`` option.

The store is whatever database the caller's :data:`~harness.db.session.SessionScope` opens:
the farm's for a farm worker, :func:`harness.db.costs.local_store` for ``edgefarm bench``.
Each read and each write is a short transaction of its own: none is held open while the
device times.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.byoc.costmodel import Costs, CostsRecord
from harness.compile import Artifact, TvmBuild, compile_artifact, tvm_version
from harness.db.costs import CostKey, Measured, store_costs, stored_costs
from harness.db.session import SessionScope
from harness.devices.base import Device, DeviceFacts
from harness.errors import JobError
from harness.jsontypes import BackendOptions
from harness.measure.device_run import (
    NativeRunner,
    Progress,
    RunFailed,
    RunLimits,
    RunnerCall,
    Workspace,
    run_on_device,
)
from harness.measure.inputs import make_inputs
from harness.measure.protocol import Protocol
from harness.modelio import PreparedModel
from harness.partition_report import CalibrationInfo, CalibrationReport
from harness.runner.result import RunnerError

log = logging.getLogger(__name__)

# How each calibration function is timed: short, since a model has tens of them, but with
# enough calls for a stable median of sub-millisecond kernels. At most 2000 samples: the
# runner reports every one.
CALIBRATION_PROTOCOL = Protocol(
    warmup=3, min_iterations=15, min_seconds=0.25, max_seconds=5.0, max_iterations=2000
)


def device_class(facts: DeviceFacts) -> str:
    """Devices whose costs are interchangeable: one phone model with one SoC (emulated phones
    apart: they run on the host's CPU, or under an instruction-set emulator), or this
    machine's CPU."""
    if facts.on_this_machine:
        return f"local:{facts.model or facts.soc or 'cpu'}"[:128]
    name = " ".join(p for p in (facts.manufacturer, facts.model) if p)
    soc = facts.soc or "?"
    emulated = " emulated" if facts.emulated else ""
    if facts.isa_emulated:
        emulated += f" under {facts.extra['isa_emulator']}"
    return f"adb:{name or facts.id or '?'} ({soc}){emulated}"[:128]


def software_version() -> str:
    from harness.byoc.link import byoc_version

    return f"tvm {tvm_version()} byoc {byoc_version()}"[:64]


def accel_variant(dialect: str, options: BackendOptions) -> str:
    preference = options.get("preference", "fast_single_answer")
    if dialect == "nnapi":
        return f"nnapi/fl{options.get('feature_level')}/{preference}"
    return f"{dialect}/{preference}"


def cpu_variant(options: BackendOptions, threads: int = 0) -> str:
    """Where CPU costs are interchangeable: one optimization level and one thread pool size
    (``threads``, the run's option; 0: the runtime's default). A convolution on two threads
    takes about half the time it takes on one, and the partition decided by one-thread costs
    would offload what two threads do well on the CPU."""
    variant = f"cpu/o{options.get('opt_level', 3)}"
    return variant if threads == 0 else f"{variant}/t{threads}"


def baseline_key(model: PreparedModel) -> str:
    spec = hashlib.sha256(repr(model.input_spec_key()).encode()).hexdigest()[:12]
    return f"model:{model.file.sha256[:24]}:{spec}"


@dataclass(frozen=True)
class Entry:
    """A function of a calibration artifact to time, and what its time is stored as."""

    name: str  # the function to call
    key: str  # the signature it is stored under
    inputs: tuple[tuple[tuple[int, ...], str], ...]  # (shape, dtype) of each parameter
    description: str


def time_entries(
    device: Device,
    artifact: Artifact,
    entries: Sequence[Entry],
    *,
    limits: RunLimits,
    seed: int,
    cool_first: bool = False,
    threads: int = 0,
) -> dict[str, Measured]:
    """Each entry's median on ``device``: one runner call each, all in one workspace (the
    artifact deployed once). ``cool_first``: let the device cool before the first call.
    ``threads``: TVM's pool on the device (0: the runtime's default)."""
    program = NativeRunner(artifact, threads=threads)
    measured: dict[str, Measured] = {}
    with Workspace(device) as workspace:
        for k, entry in enumerate(entries):
            specs = [(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(entry.inputs)]
            call = RunnerCall(
                program,
                tuple(make_inputs(specs, seed + k).values()),
                CALIBRATION_PROTOCOL,
                entry=entry.name,
                label=entry.description,
            )
            outcome = run_on_device(
                device, call, limits=limits, workspace=workspace, cooldown=cool_first and k == 0
            )
            if isinstance(outcome, RunFailed):
                if isinstance(outcome.report, RunnerError):
                    raise JobError(
                        "run",
                        f"calibration of {entry.description} ({entry.name}) failed at "
                        f"{outcome.report.stage}: {outcome.report.message}",
                    )
                raise outcome.error
            samples = sorted(outcome.report.samples_ms)
            measured[entry.key] = Measured(
                float(np.median(samples)), len(samples), entry.description
            )
    return measured


def _calibration_of(artifact: Artifact) -> CalibrationInfo:
    info = artifact.manifest.get("extra", {}).get("calibration")
    if info is None:
        raise JobError("partition", "the calibration build did not describe its functions")
    return info


def _entries(model: PreparedModel, info: CalibrationInfo, *, with_baseline: bool) -> list[Entry]:
    """What a calibration artifact (described by ``info``) has to time: its candidates, its
    probes and, built for the CPU, the whole model."""
    candidates = {c["name"]: c for c in info["candidates"]}
    out = [
        Entry(
            e["name"],
            e["signature"],
            tuple((tuple(i["shape"]), str(i["dtype"])) for i in e["inputs"]),
            "+".join(candidates[e["candidate"]]["ops"])
            + " "
            + ",".join("x".join(map(str, i["shape"])) for i in e["inputs"]),
        )
        for e in info["entries"]
    ]
    out += [
        Entry(p["name"], f"probe:{p['bytes']}", ((tuple(p["shape"]), "float32"),), "probe relu")
        for p in info["probes"]
    ]
    if with_baseline:
        out.append(
            Entry(
                "main",
                baseline_key(model),
                tuple((s.static_shape(), s.dtype) for s in model.inputs),
                f"{model.name} on the CPU",
            )
        )
    return out


def measured_costs(
    model: PreparedModel,
    device: Device,
    backend: TvmBuild,
    *,
    dialect: str,
    target: str,
    options: BackendOptions,
    facts: DeviceFacts,
    sessions: SessionScope,
    limits: RunLimits,
    progress: Progress,
    seed: int = 0,
    threads: int = 0,
) -> tuple[CostsRecord, CalibrationReport]:
    """The ``costs`` option of a ``partition: cost`` build for ``device`` (see module doc),
    and what calibration did (for the result document). The costs alone go into the build
    options, so the same stored costs give the same artifact. ``backend`` offloads through
    ``dialect``. ``threads``: the run's TVM pool; the CPU side is timed with it and stored
    as its own variant (the accelerator's driver does not use TVM's pool)."""
    started = time.perf_counter()
    resolved = backend.resolve_options(options)
    base = {k: v for k, v in resolved.items() if k != "costs"}
    cpu_art = compile_artifact(
        model, backend, target=target, options={**base, "partition": "calibrate-cpu"}
    )
    accel_art = compile_artifact(
        model, backend, target=target, options={**base, "partition": "calibrate-accel"}
    )
    cpu_info, accel_info = _calibration_of(cpu_art), _calibration_of(accel_art)

    klass = device_class(facts)
    software = software_version()
    cpu_key = CostKey(klass, cpu_variant(resolved, threads), software)
    accel_key = CostKey(klass, accel_variant(dialect, resolved), software)

    measured_now = 0
    results: dict[str, dict[str, Measured]] = {}
    for key, artifact, wanted in (
        (cpu_key, cpu_art, _entries(model, cpu_info, with_baseline=True)),
        (accel_key, accel_art, _entries(model, accel_info, with_baseline=False)),
    ):
        # Several candidates can share a signature: time each one once.
        unique = list({e.key: e for e in wanted}.values())
        with sessions() as session:
            have = stored_costs(key, (e.key for e in unique), session=session)
        missing = [e for e in unique if e.key not in have]
        if missing:
            progress(
                "calibrate",
                f"timing {len(missing)} function(s) for {key.variant} on {device.id} ({klass})",
            )
            new = time_entries(
                device,
                artifact,
                missing,
                limits=limits,
                seed=seed,
                cool_first=measured_now == 0,
                threads=threads if key is cpu_key else 0,
            )
            with sessions() as session:
                store_costs(key, new, device=device.id, session=session)
            have.update(new)
            measured_now += len(new)
        results[key.variant] = have

    cpu, accel = results[cpu_key.variant], results[accel_key.variant]
    candidates = cpu_info["candidates"]
    standalone = {
        c["signature"]: sum(b for _, b in c["inputs"]) + int(c["output_bytes"]) for c in candidates
    }

    def probes(found: dict[str, Measured], info: CalibrationInfo) -> list[tuple[int, float]]:
        return [(int(p["bytes"]), found[f"probe:{p['bytes']}"].median_ms) for p in info["probes"]]

    costs = Costs.from_measurements(
        device_class=klass,
        baseline_ms=cpu[baseline_key(model)].median_ms,
        cpu_standalone_ms={s: cpu[s].median_ms for s in standalone},
        accel_standalone_ms={s: accel[s].median_ms for s in standalone},
        standalone_bytes=standalone,
        cpu_probes=probes(cpu, cpu_info),
        accel_probes=probes(accel, accel_info),
    )
    total = len(cpu) + len(accel)
    log.info(
        "costs of %s on %s: %d measured now, %d stored before (%.1f s)",
        model.name,
        klass,
        measured_now,
        total - measured_now,
        time.perf_counter() - started,
    )
    return costs.to_dict(), {
        "device_class": klass,
        "software": software,
        "variants": {"cpu": cpu_key.variant, "accel": accel_key.variant},
        "measured_now": measured_now,
        "reused": total - measured_now,
        "wall_ms": round((time.perf_counter() - started) * 1000.0, 1),
    }
