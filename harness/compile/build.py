"""Compiling a prepared model into a cached artifact.

The TVM work (import into Relax, lowering, build, export) runs in a child process
(:mod:`harness.compile.child`) so that a crash inside TVM or LLVM, or a build that never ends,
fails one measurement instead of the whole command, and its memory is returned afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from harness import __version__
from harness.compile import forkserver
from harness.compile.cache import COMPILE_VERSION, Artifact, ArtifactCache, artifact_key
from harness.compile.forkserver import Finished
from harness.compile.lowering import Lowering, TvmBuild
from harness.compile.records import CompileRequest, CompileResult, Manifest
from harness.compile.targets import get_target
from harness.compile.tuned import TUNING_PREFIX_VERSION, AppliedRecords
from harness.config import get_settings
from harness.errors import HarnessBug, JobError, one_line
from harness.jsontypes import BackendOptions
from harness.modelio import PreparedModel

log = logging.getLogger(__name__)

RESULT_MARKER = "EDGEFARM-COMPILE-RESULT "


def tvm_version() -> str:
    """The installed TVM version, without importing TVM (which takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-tvm")
    except PackageNotFoundError:  # a source build of TVM
        import tvm

        return str(tvm.__version__)


def artifact_key_for(
    model: PreparedModel,
    backend: TvmBuild,
    target: str,
    options: BackendOptions,
    tuning: AppliedRecords | None = None,
) -> str:
    """The cache key of a build; a tuned build's names the digest of the records it applies
    (an untuned build's key is what it was before tuning existed)."""
    if tuning is not None:
        options = {**options, "tuning_records": tuning.digest}
    return artifact_key(
        model_sha256=model.file.sha256,
        input_spec=model.input_spec_key(),
        backend=backend.name,
        target=get_target(target).label,  # host/x86-64-v4: another CPU's build is another key
        options=options,
        tvm_version=tvm_version(),
    )


def compile_artifact(
    model: PreparedModel,
    backend: TvmBuild,
    *,
    target: str,
    options: BackendOptions | None = None,
    cache: ArtifactCache | None = None,
    timeout_s: float | None = None,
    tuning: AppliedRecords | None = None,
) -> Artifact:
    """Return the artifact of ``model`` for ``backend`` on ``target``, building it at most once;
    with ``tuning``, its records applied to the TIR functions they cover."""
    backend.check_format(model.format, model_name=model.name)
    settings = get_settings()
    resolved = backend.resolve_options(options)
    spec = get_target(target)
    cache = cache or ArtifactCache(settings.cache_path)
    key = artifact_key_for(model, backend, target, resolved, tuning)
    timeout = timeout_s or settings.compile_timeout_s

    def build(out_dir: Path) -> Manifest:
        if spec.toolchain is not None:
            spec.toolchain.tool("g++", stage="link")  # missing: say so now, not after the build
        result = _run_child(
            model, backend.name, backend.lowering, target, resolved, out_dir, timeout, tuning
        )
        manifest: Manifest = {
            "library": result["library"],
            "backend": backend.name,
            "target": target,
            "target_tvm": get_target(target).tvm,
            "options": resolved,
            "tvm_version": tvm_version(),
            "edgefarm_version": __version__,
            "compile_version": COMPILE_VERSION,
            "model": {"name": model.name, "sha256": model.file.sha256, "format": model.format},
            "inputs": [s.to_dict() for s in model.inputs],
            "outputs": [s.to_dict() for s in model.outputs],
            "compile_ms": result["compile_ms"],
            "stages_ms": result["stages_ms"],
            "archive": result.get("archive"),
            "toolchain": result.get("toolchain", {}),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if result.get("extra"):
            manifest["extra"] = result["extra"]
        if tuning is not None:
            manifest["tuning"] = {**tuning.provenance, "scheduled": result.get("scheduled", [])}
        return manifest

    return cache.get_or_build(key, build)


def model_workloads(
    model: PreparedModel,
    backend: TvmBuild,
    *,
    target: str,
    options: BackendOptions | None = None,
    cache_dir: Path | None = None,
) -> list[str]:
    """The workloads of the build of ``model`` for ``backend`` on ``target`` (untuned, with
    ``options``): the structural hashes of its TIR functions as MetaSchedule matches tuning
    records to them; for an offloading backend, those of its CPU part. Found by the compile
    child (an import and lowering, no build) once per untuned artifact key, then read from
    ``<cache>/tuning/workloads/<key>.json``, which names the :data:`TUNING_PREFIX_VERSION`
    it was found with: a file an older edgefarm wrote (other hashes for the same model) is
    found again, not believed."""
    settings = get_settings()
    resolved = backend.resolve_options(options)
    key = artifact_key_for(model, backend, target, resolved)
    path = (cache_dir or settings.cache_path) / "tuning" / "workloads" / f"{key}.json"
    try:
        cached = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        cached = None
    if (
        isinstance(cached, dict)
        and cached.get("prefix") == TUNING_PREFIX_VERSION
        and isinstance(cached.get("workloads"), list)
        and all(isinstance(w, str) for w in cached["workloads"])
    ):
        return list(cached["workloads"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgefarm-workloads-") as tmp:
        result = _run_child(
            model,
            backend.name,
            backend.lowering,
            target,
            resolved,
            Path(tmp),
            settings.compile_timeout_s,
            workloads_only=True,
        )
    workloads = result.get("workloads")
    if workloads is None:
        raise HarnessBug("the compile child answered a workloads request without workloads")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps({"prefix": TUNING_PREFIX_VERSION, "workloads": workloads}))
    os.replace(staging, path)
    log.info(
        "%s for %s/%s: %d workload(s), found in %.1f s",
        model.name,
        backend.name,
        target,
        len(workloads),
        time.perf_counter() - start,
    )
    return workloads


def _in_child(request: CompileRequest, timeout_s: float) -> Finished:
    """Run ``request`` in a child process of its own: forked from the compile server (TVM
    imported already), or a fresh interpreter when the server is off or died under the
    build. Raises :class:`subprocess.TimeoutExpired` once the child is killed."""
    if forkserver.enabled():
        try:
            return forkserver.server().run(dict(request), timeout_s)
        except forkserver.ServerGone as exc:
            log.warning("%s; building in a fresh process", exc)
    return forkserver.fresh_child("harness.compile.child", json.dumps(request), timeout_s)


def _run_child(
    model: PreparedModel,
    backend: str,
    lowering: Lowering,
    target: str,
    options: BackendOptions,
    out_dir: Path,
    timeout_s: float,
    tuning: AppliedRecords | None = None,
    *,
    workloads_only: bool = False,
) -> CompileResult:
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="edgefarm-compile-") as tmp:
        model_path = model.file.path
        if model_path is None:
            model_path = Path(tmp) / f"model.{model.format}"
            model_path.write_bytes(model.file.data)
        request: CompileRequest = {
            "model_path": str(model_path),
            "model_name": model.name,
            "inputs": [f"{s.name}:{s.shape_str()}:{s.dtype}" for s in model.inputs],
            "backend": backend,
            "lowering": lowering.to_json(),
            "target": target,
            "options": options,
            "out_dir": str(out_dir),
            "ndk_home": str(settings.android_ndk_home) if settings.android_ndk_home else None,
            "api_level": settings.android_api_level,
        }
        if tuning is not None:
            request["tuning_dir"] = str(tuning.work_dir)
        if workloads_only:
            request["workloads_only"] = True
        log.debug("compile child: %s", request)
        try:
            finished = _in_child(request, timeout_s)
        except subprocess.TimeoutExpired:
            raise JobError(
                "compile",
                f"compiling {model.name} for {backend}/{target} ran past {timeout_s:.0f} s "
                "(EDGEFARM_COMPILE_TIMEOUT_S raises the limit)",
            ) from None
    stdout, stderr = finished.stdout, finished.stderr
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result: CompileResult = json.loads(line[len(RESULT_MARKER) :])
            break
    else:
        if finished.returncode < 0:
            name = signal.Signals(-finished.returncode).name
            raise JobError(
                "compile",
                f"TVM crashed ({name}) while compiling {model.name} for {backend}/{target}: "
                f"{one_line(stderr) or 'no message'}",
            )
        raise JobError(
            "compile",
            f"the compiler process exited with status {finished.returncode} without a result: "
            f"{one_line(stderr) or 'no message'}",
        )
    if result.get("status") != "ok":
        raise JobError(result.get("stage", "compile"), result.get("message", "compile failed"))
    return result
