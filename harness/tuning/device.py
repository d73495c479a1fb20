"""Measuring MetaSchedule's candidates on a device: the native runner's kernel mode.

A batch of candidates (the libraries :class:`harness.tuning.search` built on this machine) is
pushed into one run directory under the device's work root, with a plan naming each library
and its arguments' dtypes and shapes; one runner invocation (``edgefarm-runner --kernels``)
times them all and prints one JSON line per kernel as it finishes. A kernel that crashes the
runner loses only itself: the kernels after it are timed by a second invocation. The run
directory is removed after each batch. Every path sent to the device is one we made under its
work root, and every shell argument is quoted by the device's transport.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.devices.base import Device
from harness.devices.deploy import RUNNER_NAME, ensure_bundle, new_run_dir, runtime_bundle
from harness.errors import CommandTimeout, EdgefarmError, JobError, one_line

log = logging.getLogger(__name__)

PLAN_NAME = "kernels.plan"


NOT_RUN = "not run: "  # the error of a candidate its tuning never ran (KernelTiming.not_run)


@dataclass(frozen=True)
class KernelTiming:
    """One candidate's times on the device (seconds per call), or why it has none."""

    costs_s: tuple[float, ...] = ()
    error: str | None = None

    @classmethod
    def not_run(cls, why: str) -> KernelTiming:
        """A candidate that was never run (its tuning stopped first): no measurement, and no
        failure either; the search records nothing for it (a later search may measure it)."""
        return cls(error=f"{NOT_RUN}{why}")

    @property
    def was_run(self) -> bool:
        return self.error is None or not self.error.startswith(NOT_RUN)


def arg_text(info: Any) -> str:
    """A MetaSchedule ``TensorInfo`` as the runner's ``DTYPE:SHAPE`` (``float32:1x8x3x3``)."""
    kind, dtype, shape = info.as_json()
    if kind != "TENSOR":
        raise JobError("compile", f"a candidate takes a {kind} argument; only tensors are timed")
    dims = [int(d) for d in shape]
    return f"{dtype}:{'x'.join(str(d) for d in dims) if dims else 'scalar'}"


def parse_kernel_lines(stdout: str) -> tuple[dict[str, KernelTiming], bool, int | None]:
    """The runner's per-kernel lines by library name, whether its summary line came (it
    did not: the runner crashed or was killed after the kernels reported), and the threads
    its summary says TVM's pool had (None: not said)."""
    found: dict[str, KernelTiming] = {}
    finished = False
    threads: int | None = None
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        if data.get("mode") == "kernels":
            finished = True
            if isinstance(data.get("threads"), int) and data["threads"] > 0:
                threads = data["threads"]
        elif "module" in data:
            name = posixpath.basename(str(data["module"]))
            if data.get("status") == "ok":
                costs = tuple(float(c) for c in data.get("costs_s", []))
                found[name] = KernelTiming(costs_s=costs)
            else:
                found[name] = KernelTiming(
                    error=f"{data.get('stage', 'run')}: {data.get('message', 'failed')}"
                )
    return found, finished, threads


class KernelTimer(Protocol):
    """What measures a batch of candidates: one device (:class:`DeviceKernelTimer`), or a
    farm's idle phones of one class (``workers.tasks.tuning``)."""

    def time(self, candidates: list[tuple[Path, list[str]]]) -> list[KernelTiming]:
        """Each (library, argument texts) timed, in order, (a timing or an error each)."""
        ...


class DeviceKernelTimer:
    """Times batches of candidate libraries on ``device`` with the runtime bundle of
    ``target`` (pushed once), TVM's pool at ``threads`` (0: the runtime's default), as the
    runs that use the records should be."""

    def __init__(
        self,
        device: Device,
        target: str,
        *,
        number: int = 3,
        repeat: int = 1,
        min_repeat_ms: int = 40,
        timeout_s: float = 120.0,
        threads: int = 0,
    ) -> None:
        self.device = device
        self.target = target
        self.number, self.repeat, self.min_repeat_ms = number, repeat, min_repeat_ms
        self.timeout_s = timeout_s
        self.threads = threads  # TVM's pool (the runner's --threads); 0: the runtime's default
        self.pool_threads: int | None = None  # what the runner last said its pool had
        self._bundle_dir: str | None = None
        self.batches = 0
        self.kernels = 0

    def bundle_dir(self) -> str:
        if self._bundle_dir is None:
            self._bundle_dir = ensure_bundle(self.device, runtime_bundle(self.target))
        return self._bundle_dir

    def time(self, candidates: list[tuple[Path, list[str]]]) -> list[KernelTiming]:
        """Each (library, argument texts) timed on the device, in order."""
        if not candidates:
            return []
        bundle = self.bundle_dir()
        directory = new_run_dir(self.device)
        names = [f"k{i}.so" for i in range(len(candidates))]
        try:
            for (library, _), name in zip(candidates, names, strict=True):
                # The run directory is ours alone and removed afterwards: no atomic pushes.
                self.device.push(library, posixpath.join(directory, name), atomic=False)
            timings: dict[str, KernelTiming] = {}
            pending = list(range(len(candidates)))
            while pending:
                found, finished = self._run_plan(bundle, directory, names, candidates, pending)
                timings.update(found)
                if finished:
                    break
                # The runner died: the first kernel without a line killed it.
                missing = [i for i in pending if names[i] not in found]
                if not missing:
                    break
                crashed = missing[0]
                timings[names[crashed]] = KernelTiming(error="the kernel crashed the runner")
                pending = missing[1:]
        finally:
            try:
                self.device.remove(directory)
            except EdgefarmError as exc:
                log.warning("%s: could not remove %s: %s", self.device.id, directory, exc)
        self.batches += 1
        self.kernels += len(candidates)
        return [
            timings.get(name, KernelTiming(error="the runner did not report it")) for name in names
        ]

    def _run_plan(
        self,
        bundle: str,
        directory: str,
        names: list[str],
        candidates: list[tuple[Path, list[str]]],
        indices: list[int],
    ) -> tuple[dict[str, KernelTiming], bool]:
        lines = [" ".join([names[i], *candidates[i][1]]) for i in indices]
        with tempfile.TemporaryDirectory(prefix="edgefarm-plan-") as tmp:
            local = Path(tmp) / PLAN_NAME
            local.write_text("".join(line + "\n" for line in lines))
            remote_plan = posixpath.join(directory, PLAN_NAME)
            self.device.push(local, remote_plan, atomic=False)
        argv = [
            posixpath.join(bundle, RUNNER_NAME),
            "--kernels",
            remote_plan,
            "--number",
            str(self.number),
            "--repeat",
            str(self.repeat),
            "--min-repeat-ms",
            str(self.min_repeat_ms),
            *(["--threads", str(self.threads)] if self.threads else []),
        ]
        try:
            result = self.device.shell(
                argv,
                timeout_s=self.timeout_s,
                env={"LD_LIBRARY_PATH": bundle},
                cwd=directory,
            )
        except CommandTimeout as exc:
            log.warning("%s: timing %d kernels timed out: %s", self.device.id, len(lines), exc)
            return {}, False
        found, finished, threads = parse_kernel_lines(result.stdout)
        if threads:
            self.pool_threads = threads
        if not finished and not found:
            log.warning(
                "%s: the kernel runner reported nothing (exit %s): %s",
                self.device.id,
                result.exit_code,
                one_line(result.stdout + result.stderr, 300),
            )
        return found, finished


def device_runner(timer: KernelTimer) -> Any:
    """A MetaSchedule runner that measures each batch of candidates with ``timer`` (on the
    device)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    @derived_object
    class DeviceRunner(PyRunner):  # type: ignore[misc]
        def run(self, runner_inputs: list[Any]) -> list[Any]:
            candidates = [
                (Path(item.artifact_path), [arg_text(a) for a in item.args_info])
                for item in runner_inputs
            ]
            futures = []
            for timing in timer.time(candidates):
                if timing.error is not None or not timing.costs_s:
                    futures.append(LocalRunnerFuture(error_message=timing.error or "no times"))
                else:
                    futures.append(LocalRunnerFuture(res=list(timing.costs_s)))
            return futures

    return DeviceRunner()
