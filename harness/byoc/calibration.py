"""Calibration: per-candidate costs measured on a device, stored per device class.

``--partition cost`` needs, for the device class it targets, the CPU and accelerator time of
every offload candidate of the model, the boundary probes and the whole model on the CPU
(see :mod:`harness.byoc.costmodel`). :func:`measured_costs` builds the two calibration
artifacts (:mod:`harness.byoc.candidates`), times on the device only what the store does not
have yet for this device class and software version, stores it, and returns the costs the
partitioner takes as its ``costs`` option. The store is a table (``op_costs``): the farm's
database for the farm, ``$EDGEFARM_HOME/costs.sqlite`` for ``edgefarm bench``.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness.byoc.costmodel import Costs
from harness.compile import compile_artifact, tvm_version
from harness.compile.backends import Backend
from harness.compile.cache import Artifact
from harness.config import get_settings
from harness.db.models import OpCost, utcnow
from harness.devices.base import Device, wait_cool
from harness.devices.deploy import (
    RUNNER_NAME,
    ensure_artifact,
    ensure_bundle,
    new_run_dir,
    runtime_bundle,
)
from harness.errors import EdgefarmError, JobError
from harness.measure.inputs import make_inputs
from harness.measure.protocol import Protocol
from harness.modelio import PreparedModel
from harness.runner.result import RunnerOk, parse_runner_output

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]

# How each calibration function is timed: short, since a model has tens of them, but with
# enough calls for a stable median of sub-millisecond kernels. At most 2000 samples: the
# runner reports every one.
CALIBRATION_PROTOCOL = Protocol(
    warmup=3, min_iterations=15, min_seconds=0.25, max_seconds=5.0, max_iterations=2000
)


def device_class(facts: dict[str, Any]) -> str:
    """Devices whose costs are interchangeable: one phone model with one SoC (emulated phones
    apart: they run on the host's CPU), or this machine's CPU."""
    if facts.get("kind") == "local":
        return f"local:{facts.get('model') or facts.get('soc') or 'cpu'}"[:128]
    name = " ".join(p for p in (facts.get("manufacturer"), facts.get("model")) if p)
    soc = facts.get("soc") or "?"
    emulated = " emulated" if facts.get("emulated") else ""
    return f"adb:{name or facts.get('id', '?')} ({soc}){emulated}"[:128]


def software_version() -> str:
    from harness.byoc.link import byoc_version

    return f"tvm {tvm_version()} byoc {byoc_version()}"[:64]


def accel_variant(dialect: str, options: dict[str, Any]) -> str:
    preference = options.get("preference", "fast_single_answer")
    if dialect == "nnapi":
        return f"nnapi/fl{options.get('feature_level')}/{preference}"
    return f"{dialect}/{preference}"


def cpu_variant(options: dict[str, Any]) -> str:
    return f"cpu/o{options.get('opt_level', 3)}"


# ------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    median_ms: float
    samples: int
    description: str = ""


class CostStore:
    """The ``op_costs`` table on an engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def local(cls) -> CostStore:
        """The store of ``edgefarm bench``: ``$EDGEFARM_HOME/costs.sqlite``."""
        path = get_settings().home / "costs.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{path}")
        OpCost.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
        return cls(engine)

    def get(
        self, device_class: str, variant: str, software: str, signatures: Iterable[str]
    ) -> dict[str, Measured]:
        wanted = sorted(set(signatures))
        found: dict[str, Measured] = {}
        with Session(self.engine) as session:
            for chunk in range(0, len(wanted), 500):
                rows = session.scalars(
                    select(OpCost).where(
                        OpCost.device_class == device_class,
                        OpCost.variant == variant,
                        OpCost.software == software,
                        OpCost.signature.in_(wanted[chunk : chunk + 500]),
                    )
                )
                for row in rows:
                    found[row.signature] = Measured(row.median_ms, row.samples, row.description)
        return found

    def put(
        self,
        device_class: str,
        variant: str,
        software: str,
        measured: dict[str, Measured],
        *,
        device: str,
    ) -> None:
        """Insert or replace; one transaction. A concurrent writer of the same keys wins or
        loses as a whole, and both wrote times of the same thing."""
        for attempt in range(2):
            try:
                with Session(self.engine) as session, session.begin():
                    existing = {
                        row.signature: row
                        for row in session.scalars(
                            select(OpCost).where(
                                OpCost.device_class == device_class,
                                OpCost.variant == variant,
                                OpCost.software == software,
                                OpCost.signature.in_(list(measured)),
                            )
                        )
                    }
                    for signature, m in measured.items():
                        row = existing.get(signature)
                        if row is None:
                            row = OpCost(
                                device_class=device_class,
                                variant=variant,
                                software=software,
                                signature=signature,
                            )
                            session.add(row)
                        row.median_ms = m.median_ms
                        row.samples = m.samples
                        row.description = m.description[:256]
                        row.device = device[:128]
                        row.measured_at = utcnow()
                return
            except IntegrityError:
                if attempt:
                    raise

    def rows(self, device_class: str | None = None) -> list[OpCost]:
        with Session(self.engine) as session:
            query = select(OpCost).order_by(OpCost.device_class, OpCost.variant, OpCost.signature)
            if device_class is not None:
                query = query.where(OpCost.device_class == device_class)
            return list(session.scalars(query))

    def forget(self, device_class: str | None = None) -> int:
        """Delete stored costs (of one device class); the next cost run measures again."""
        from sqlalchemy import delete

        with Session(self.engine) as session, session.begin():
            query = delete(OpCost)
            if device_class is not None:
                query = query.where(OpCost.device_class == device_class)
            return int(session.execute(query).rowcount)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------
# Timing calibration functions on a device
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str  # the function to call
    key: str  # what it is stored as
    inputs: tuple[tuple[tuple[int, ...], str], ...]
    description: str


def _time_entries(
    device: Device, artifact: Artifact, entries: Sequence[Entry], *, seed: int
) -> dict[str, Measured]:
    """Each entry's median on ``device`` (one runner call each, in one run directory)."""
    settings = get_settings()
    bundle = runtime_bundle(artifact.manifest["target"])
    bundle_dir = ensure_bundle(device, bundle)
    artifact_dir = ensure_artifact(device, artifact)
    runner = posixpath.join(bundle_dir, RUNNER_NAME)
    library = posixpath.join(artifact_dir, artifact.library.name)
    measured: dict[str, Measured] = {}
    run_dir = new_run_dir(device)
    try:
        with tempfile.TemporaryDirectory(prefix="edgefarm-cal-") as tmp_text:
            tmp = Path(tmp_text)
            for k, entry in enumerate(entries):
                command = [runner, "--module", library, "--entry", entry.name]
                specs = [(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(entry.inputs)]
                for i, array in enumerate(make_inputs(specs, seed + k).values()):
                    local = tmp / f"e{k}_{i}.npy"
                    np.save(local, np.ascontiguousarray(array))
                    remote = posixpath.join(run_dir, local.name)
                    device.push(local, remote, atomic=False)
                    command += ["--input", remote]
                command += [
                    *CALIBRATION_PROTOCOL.runner_args(),
                    "--pid-file",
                    posixpath.join(run_dir, "runner.pid"),
                ]
                result = device.shell(
                    command,
                    timeout_s=settings.run_timeout_s + CALIBRATION_PROTOCOL.max_seconds,
                    env={"LD_LIBRARY_PATH": bundle_dir},
                    cwd=run_dir,
                )
                report = parse_runner_output(
                    result.stdout, stderr=result.stderr, returncode=result.exit_code
                )
                if not isinstance(report, RunnerOk):
                    raise JobError(
                        "run",
                        f"calibration of {entry.description} ({entry.name}) failed at "
                        f"{report.stage}: {report.message}",
                    )
                samples = sorted(report.samples_ms)
                measured[entry.key] = Measured(
                    float(np.median(samples)), len(samples), entry.description
                )
    finally:
        try:
            device.remove(run_dir)
        except EdgefarmError as exc:
            log.warning("%s: could not remove %s: %s", device.id, run_dir, exc)
    return measured


def _calibration_of(artifact: Artifact) -> dict[str, Any]:
    info = (artifact.manifest.get("extra") or {}).get("calibration")
    if not isinstance(info, dict):
        raise JobError("partition", "the calibration build did not describe its functions")
    return info


def baseline_key(model: PreparedModel) -> str:
    spec = hashlib.sha256(repr(model.input_spec_key()).encode()).hexdigest()[:12]
    return f"model:{model.file.sha256[:24]}:{spec}"


def measured_costs(
    model: PreparedModel,
    device: Device,
    backend: Backend,
    *,
    target: str,
    options: dict[str, Any],
    facts: dict[str, Any],
    store: CostStore,
    progress: Progress,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``costs`` option of a ``partition: cost`` build for ``device`` (see module doc),
    and what calibration did (for the result document). The costs alone go into the build
    options, so the same stored costs give the same artifact."""
    dialect = getattr(backend, "dialect", None)
    if dialect is None:
        raise JobError("partition", f"backend {backend.name} does not offload; no cost mode")
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
    cpu_v, accel_v = cpu_variant(resolved), accel_variant(dialect, resolved)

    def entries(info: dict[str, Any], with_baseline: bool) -> list[Entry]:
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

    measured_now = 0
    results: dict[str, dict[str, Measured]] = {}
    for variant, artifact, wanted in (
        (cpu_v, cpu_art, entries(cpu_info, True)),
        (accel_v, accel_art, entries(accel_info, False)),
    ):
        # Several candidates can share a signature: time each one once.
        unique = list({e.key: e for e in wanted}.values())
        have = store.get(klass, variant, software, (e.key for e in unique))
        missing = [e for e in unique if e.key not in have]
        if missing:
            if measured_now == 0:
                wait_cool(
                    device,
                    max_temp_c=get_settings().cooldown_max_temp_c,
                    max_wait_s=get_settings().cooldown_max_wait_s,
                )
            progress(
                "calibrate",
                f"timing {len(missing)} function(s) for {variant} on {device.id} ({klass})",
            )
            new = _time_entries(device, artifact, missing, seed=seed)
            store.put(klass, variant, software, new, device=device.id)
            have.update(new)
            measured_now += len(new)
        results[variant] = have

    cpu, accel = results[cpu_v], results[accel_v]
    candidates = cpu_info["candidates"]
    standalone = {
        c["signature"]: sum(b for _, b in c["inputs"]) + int(c["output_bytes"]) for c in candidates
    }

    def probes(found: dict[str, Measured], info: dict[str, Any]) -> list[tuple[int, float]]:
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
    total = len(results[cpu_v]) + len(results[accel_v])
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
        "variants": {"cpu": cpu_v, "accel": accel_v},
        "measured_now": measured_now,
        "reused": total - measured_now,
        "wall_ms": round((time.perf_counter() - started) * 1000.0, 1),
    }
