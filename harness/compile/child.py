"""The compile child process: one request as JSON on stdin, one result line on stdout.

Run by :mod:`harness.compile.build`; not a user command. Everything TVM raises becomes a
``{"status": "error", "stage": ..., "message": ...}`` result with a one-line message.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness.compile.lowering import Lowering
from harness.compile.ndk import find_clang, link_archive
from harness.compile.records import CompileRequest, CompileResult
from harness.compile.targets import get_target
from harness.compile.tvmimport import import_tvm
from harness.errors import EdgefarmError, JobError, one_line
from harness.jsontypes import BackendOptions
from harness.modelio import model_from_bytes, parse_input_spec, prepare, to_relax

RESULT_MARKER = "EDGEFARM-COMPILE-RESULT "


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _cc_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _toolchain_message(text: str) -> str:
    """The compiler's or linker's own words out of TVM's report of a failed export ("Compilation
    error:", the tool's output, "Command line: ..."): its error lines, else the report."""
    body = text.split("Command line:", 1)[0]
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln != "Compilation error:"]
    # collect2's summary says only that ld failed; ld's own line above it says why.
    useful = [ln for ln in lines if not ln.startswith("collect2:")] or lines
    errors = [ln for ln in useful if "error" in ln.lower()] or useful
    return one_line(" | ".join(errors[:3]), 400) if errors else one_line(text, 400)


def _opt_level(options: BackendOptions) -> int:
    given = options.get("opt_level", 3)
    if isinstance(given, float) and given.is_integer():
        given = int(given)
    if isinstance(given, bool) or not isinstance(given, int):
        raise JobError("compile", f"opt_level is an integer, not {given!r}")
    return given


def compile_request(request: CompileRequest) -> CompileResult:
    """Import, lower, build and export one model; returns the result dict."""
    tvm = import_tvm()
    import tvm_ffi

    lowering = Lowering.from_json(request["lowering"])
    target = get_target(request["target"])
    tvm_target = target.tvm_target()  # a CPU LLVM does not know: refused before the import
    out_dir = Path(request["out_dir"])
    stages: dict[str, float] = {}

    start = time.perf_counter()
    path = Path(request["model_path"])
    # Named as the caller knows the model: a stored file's name is its sha256.
    file = model_from_bytes(path.read_bytes(), name=request["model_name"], path=path)
    model = prepare(file, [parse_input_spec(s) for s in request["inputs"]])
    mod = to_relax(model)
    stages["import_ms"] = _ms(start)

    t = time.perf_counter()
    try:
        mod = lowering.lower(mod, request["options"])
    except EdgefarmError:
        raise
    except Exception as exc:
        raise JobError(
            "partition", f"TVM failed while partitioning: {one_line(str(exc))}"
        ) from None
    stages["lower_ms"] = _ms(t)
    if request.get("workloads_only"):
        return _workloads(mod, tvm_target, stages, start)
    # BYOC backends describe what they offloaded (the partition report) for the manifest.
    extra = lowering.artifact_extra(mod)

    # Records apply to the module as lowered: an offloading build's CPU part, after the
    # partition (its offloaded functions are external calls, not TIR).
    tuning_dir = request.get("tuning_dir")
    scheduled: list[str] | None = None
    if tuning_dir is not None:
        from harness.compile.tuned import apply_records, scheduled_functions

        t = time.perf_counter()
        try:
            mod = apply_records(mod, tvm_target, Path(tuning_dir))
        except Exception as exc:
            raise JobError(
                "compile", f"TVM failed to apply the tuning records: {one_line(str(exc))}"
            ) from None
        scheduled = sorted(scheduled_functions(mod))
        stages["tuning_ms"] = _ms(t)

    opt_level = _opt_level(request["options"])
    t = time.perf_counter()
    try:
        with tvm.transform.PassContext(opt_level=opt_level):
            executable = tvm.compile(mod, target=tvm_target)
    except Exception as exc:
        raise JobError("compile", f"TVM failed to build: {one_line(str(exc))}") from None
    stages["build_ms"] = _ms(t)

    include_dirs = [
        Path(tvm_ffi.libinfo.find_include_path()),
        Path(tvm_ffi.libinfo.find_dlpack_include_path()),
    ]
    toolchain: dict[str, str] = {}
    result: CompileResult = {"status": "ok", "toolchain": toolchain}
    t = time.perf_counter()
    if target.needs_ndk:
        archive = out_dir / "lib.tar"
        try:
            executable.export_library(str(archive))
        except Exception as exc:
            raise JobError(
                "compile", f"TVM failed to export objects: {one_line(str(exc))}"
            ) from None
        stages["export_ms"] = _ms(t)
        result["archive"] = archive.name
        t = time.perf_counter()
        ndk = request.get("ndk_home")
        clang = find_clang(Path(ndk) if ndk else None, int(request["api_level"]))
        link_archive(
            archive,
            out_dir / target.library,
            clang=clang,
            include_dirs=include_dirs,
            # BYOC: the generated C's header and the phone's accelerator library.
            extra_args=lowering.link_options(android=True, options=request["options"]),
        )
        toolchain["cc"] = _cc_version(str(clang))
        stages["link_ms"] = _ms(t)
    else:
        # This machine's g++, or a cross compiler (tvm.support.cc, 0.27's home of the old
        # tvm.contrib.cc) for a device of another instruction set.
        cross = target.toolchain
        cc = "g++" if cross is None else cross.tool("g++", stage="link")
        export: dict[str, Any] = {}
        if cross is not None:
            # A module with every operator offloaded has no LLVM code: the packing object's
            # triple must come from our compiler, not the host's (CrossToolchain.fcompile).
            export["fcompile"] = cross.fcompile(stage="link")
        # BYOC backends add the generated C's header and the reference driver (built by the
        # same toolchain).
        link = lowering.link_options(android=False, options=request["options"], toolchain=cross)
        try:
            executable.export_library(
                str(out_dir / target.library),
                options=[f"-I{d}" for d in include_dirs] + link,
                **export,
            )
        except Exception as exc:
            what = "host" if cross is None else target.name
            raise JobError(
                "link",
                f"linking the {what} library with {Path(cc).name} failed: "
                f"{_toolchain_message(str(exc))}",
            ) from None
        stages["export_ms"] = _ms(t)
        toolchain["cc"] = _cc_version(cc)
    result["library"] = target.library
    if extra:
        result["extra"] = extra
    if scheduled is not None:
        result["scheduled"] = scheduled
    result["stages_ms"] = stages
    result["compile_ms"] = _ms(start)
    return result


def _workloads(mod: Any, target: Any, stages: dict[str, float], start: float) -> CompileResult:
    """The answer to a ``workloads_only`` request: the lowered module's workloads."""
    from harness.compile.tuned import workload_hashes

    t = time.perf_counter()
    try:
        workloads = workload_hashes(mod, target)
    except Exception as exc:
        raise JobError(
            "compile", f"TVM failed to list the model's TIR functions: {one_line(str(exc))}"
        ) from None
    stages["workloads_ms"] = _ms(t)
    return {
        "status": "ok",
        "workloads": workloads,
        "stages_ms": stages,
        "compile_ms": _ms(start),
    }


def answer(request: CompileRequest) -> None:
    """Compile ``request`` and write its result line to stdout."""
    try:
        result = compile_request(request)
    except JobError as exc:
        result = {"status": "error", "stage": exc.stage, "message": exc.message}
    except EdgefarmError as exc:
        result = {"status": "error", "stage": "compile", "message": exc.message}
    except Exception as exc:  # a defect of ours: keep the traceback on stderr for --debug
        traceback.print_exc()
        result = {
            "status": "error",
            "stage": "compile",
            "message": f"internal error ({type(exc).__name__}): {one_line(str(exc))}",
        }
    sys.stdout.write("\n" + RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    answer(json.loads(sys.stdin.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
