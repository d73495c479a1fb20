"""Real headers: edgefarm_nn.h declares exactly the documented names, values and signatures
(documented_nn_api.json, taken from the NNAPI and Neuron Adapter documentation), and the
generated C includes the vendors' headers on Android, edgefarm_nn.h elsewhere."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.byoc import partition
from harness.byoc.codegen import build_model, emit_c
from harness.byoc.dialect import DIALECTS
from harness.byoc.link import INCLUDE_DIR
from harness.byoc.translate import tensor_shape
from harness.modelio import load, to_relax

import testmodels

HEADER = INCLUDE_DIR / "edgefarm_nn.h"
FACTS: dict[str, Any] = json.loads((Path(__file__).parent / "documented_nn_api.json").read_text())


def _compile_and_run(source: str, tmp_path: Path) -> str:
    c = tmp_path / "probe.c"
    c.write_text(source)
    exe = tmp_path / "probe"
    built = subprocess.run(
        ["gcc", "-std=gnu11", "-Wall", "-Werror", f"-I{INCLUDE_DIR}", str(c), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout


def _declared() -> tuple[set[str], set[str]]:
    """The constants and functions edgefarm_nn.h declares, read from its preprocessed text."""
    text = subprocess.run(
        ["gcc", "-E", "-P", str(HEADER)], capture_output=True, text=True, check=True
    ).stdout
    constants = set(re.findall(r"\b((?:ANEURALNETWORKS|NEURON)_[A-Z0-9_]+)\s*=", text))
    functions = set(
        re.findall(r"^\s*(?:int|void|int64_t)\s+((?:ANeuralNetworks|Neuron)\w+)\s*\(", text, re.M)
    )
    return constants, functions


def test_the_header_declares_exactly_the_documented_names() -> None:
    constants, functions = _declared()
    assert constants == set(FACTS["values"]), (
        f"not documented: {sorted(constants - set(FACTS['values']))}; "
        f"missing: {sorted(set(FACTS['values']) - constants)}"
    )
    assert functions == set(FACTS["functions"]), (
        f"not documented: {sorted(functions - set(FACTS['functions']))}; "
        f"missing: {sorted(set(FACTS['functions']) - functions)}"
    )


def test_values_signatures_and_structs_are_the_documented_ones(tmp_path: Path) -> None:
    """A C probe prints every documented constant's value as the header defines it, and
    asserts at compile time that each function, typedef and struct field has the documented
    type."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "edgefarm_nn.h"']
    for name, sig in FACTS["functions"].items():
        ret, params = sig.split("(", 1)
        lines.append(
            f"_Static_assert(__builtin_types_compatible_p(__typeof__({name}), {ret}({params}), "
            f'"{name} is not {sig}");'
        )
    for name, base in FACTS["typedefs"].items():
        lines.append(
            f'_Static_assert(__builtin_types_compatible_p({name}, {base}), "{name} is not {base}");'
        )
    for struct, fields in FACTS["structs"].items():
        for k, (field, ftype) in enumerate(fields):
            lines.append(
                f"_Static_assert(__builtin_types_compatible_p(__typeof__((({struct}*)0)->{field}), "
                f'{ftype}), "{struct}.{field} is not {ftype}");'
            )
            if k:
                prev = fields[k - 1][0]
                lines.append(
                    f"_Static_assert(offsetof({struct}, {prev}) < offsetof({struct}, {field}), "
                    f'"{struct}: {field} after {prev}");'
                )
    lines.append("int main(void) {")
    for name in FACTS["values"]:
        lines.append(f'  printf("%s %lld\\n", "{name}", (long long){name});')
    lines.append("  return 0;\n}")
    out = _compile_and_run("\n".join(lines) + "\n", tmp_path)
    got = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    wrong = {k: (got[k], v) for k, v in FACTS["values"].items() if got[k] != v}
    assert not wrong, f"header value, documented value: {wrong}"


def test_a_wrong_value_or_signature_is_caught(tmp_path: Path) -> None:
    """The probe can fail: a header whose BAD_DATA is 5, or whose addOperation takes an int
    count, does not pass it."""
    text = HEADER.read_text()
    bad = text.replace("ANEURALNETWORKS_BAD_DATA = 4", "ANEURALNETWORKS_BAD_DATA = 5")
    assert bad != text
    (tmp_path / "edgefarm_nn.h").write_text(bad)
    probe = f'#include <stdio.h>\n#include "{tmp_path}/edgefarm_nn.h"\n'
    probe += 'int main(void) { printf("%d", ANEURALNETWORKS_BAD_DATA); return 0; }\n'
    assert _compile_and_run(probe, tmp_path) != str(FACTS["values"]["ANEURALNETWORKS_BAD_DATA"])
    sig = FACTS["functions"]["NeuronModel_addOperation"].replace("uint32_t, const", "int, const", 1)
    ret, params = sig.split("(", 1)
    c = tmp_path / "sig.c"
    c.write_text(
        '#include "edgefarm_nn.h"\n'
        f"_Static_assert(__builtin_types_compatible_p(__typeof__(NeuronModel_addOperation), "
        f'{ret}({params}), "x");\n'
    )
    built = subprocess.run(
        ["gcc", "-fsyntax-only", f"-I{INCLUDE_DIR}", str(c)], capture_output=True, text=True
    )
    assert built.returncode != 0


def _conv_model() -> onnx.ModelProto:
    w = (np.random.default_rng(0).standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32)
    return testmodels.make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        [numpy_helper.from_array(w, "w")],
        "conv",
    )


def test_generated_c_takes_the_vendor_header_on_android(tmp_path: Path) -> None:
    """The same generated C compiles on the host against edgefarm_nn.h and, with __ANDROID__
    defined, against whatever stands at <android/NeuralNetworks.h> / "NeuronAdapter.h" (here
    a copy of edgefarm_nn.h, the driver's include directory not given): it needs nothing
    beyond the documented names."""
    import tvm_ffi

    path = testmodels.save(_conv_model(), tmp_path, "conv")
    ffi = [
        f"-I{tvm_ffi.libinfo.find_include_path()}",
        f"-I{tvm_ffi.libinfo.find_dlpack_include_path()}",
    ]
    vendor = tmp_path / "vendor"
    (vendor / "android").mkdir(parents=True)
    (vendor / "android" / "NeuralNetworks.h").write_text(HEADER.read_text())
    (vendor / "NeuronAdapter.h").write_text(HEADER.read_text())
    for dialect, include in (
        ("nnapi", "<android/NeuralNetworks.h>"),
        ("neuron", '"NeuronAdapter.h"'),
    ):
        parted = partition(to_relax(load(path)), dialect, {"feature_level": 7}, codegen=False)
        funcs = [f for f in parted.mod.functions.values() if f.attrs and "Codegen" in f.attrs]
        assert len(funcs) == 1
        func = funcs[0]
        model = build_model(func, DIALECTS[dialect], 7)
        shapes = [tensor_shape(p, "arg") for p in func.params]
        out = [tuple(int(x) for x in func.ret_ty.shape.values)]
        code = emit_c(model, DIALECTS[dialect], "sub0", shapes, out, "fast_single_answer")
        assert (
            f'#if defined(__ANDROID__)\n#include {include}\n#else\n#include "edgefarm_nn.h"' in code
        )
        c = tmp_path / f"{dialect}.c"
        c.write_text(code)
        host = subprocess.run(
            ["gcc", "-fsyntax-only", *ffi, f"-I{INCLUDE_DIR}", str(c)],
            capture_output=True,
            text=True,
        )
        assert host.returncode == 0, host.stderr[-2000:]
        phone = subprocess.run(
            ["gcc", "-fsyntax-only", "-D__ANDROID__", *ffi, f"-I{vendor}", str(c)],
            capture_output=True,
            text=True,
        )
        assert phone.returncode == 0, phone.stderr[-2000:]
        # Without the vendor's header the phone build cannot find it: it is the one included.
        missing = subprocess.run(
            ["gcc", "-fsyntax-only", "-D__ANDROID__", *ffi, f"-I{INCLUDE_DIR}", str(c)],
            capture_output=True,
            text=True,
        )
        assert missing.returncode != 0
        assert include.strip('<>"') in missing.stderr
