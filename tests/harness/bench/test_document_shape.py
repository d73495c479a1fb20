"""The result documents ``edgefarm bench --json`` writes keep their shape: the same keys, in
the same order, the same nesting, null where there was null and absent where there was
nothing. Users, the API and the web pages read these names (README, "The result document").

The shape of every document of one ``edgefarm bench`` (tvm-cpu, ort, tvm-nnapi and an unknown
backend; this machine, an emulated phone and an address that is no device) is compared with
``document_shapes.txt``, written from the documents of the harness before they had a type.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

from harness.devices.emulator import EmulatedPhone
from harness.measure.document import ResultDocument

import testmodels

GOLDEN = Path(__file__).with_name("document_shapes.txt")

# Objects keyed by data (thermal zone, CPU core, dtype, operator), by (parent, key): their
# values' shapes only.
MAPS = {
    ("state_before", "thermal_c"),
    ("state_before", "cpu"),
    ("state_after", "thermal_c"),
    ("state_after", "cpu"),
    ("accuracy", "tolerance"),
    ("partition", "by_op_type"),
}
# This machine's sensors vary from one host to another: the keys of its state only.
HOST_STATE = {"state_before", "state_after", "cooldown"}
# A backend's options keep the order they were given in, which a cached artifact's manifest
# (stored with sorted keys) does not: their keys in sorted order.
GIVEN_ORDER = {"compile_options"}


def shape(
    value: object, at: tuple[str, str] = ("", ""), host: bool = False, indent: str = ""
) -> str:
    """The shape of a JSON value as indented text: objects with their keys in order, arrays
    with the shapes of their elements, scalars by JSON type (int and float apart). ``at`` is
    (parent key, key) of the value."""
    inner = indent + "  "
    if isinstance(value, dict):
        if host and at[1] in HOST_STATE:
            return "{" + ", ".join(value) + "}"
        if at[1] in GIVEN_ORDER:
            value = dict(sorted(value.items()))
        if at in MAPS:
            kinds = sorted({shape(v, (at[1], "*"), host, indent) for v in value.values()})
            return "{*: " + " | ".join(kinds) + "}"
        lines = [f"{inner}{k}: {shape(v, (at[1], k), host, inner)}" for k, v in value.items()]
        return "{\n" + "\n".join(lines) + f"\n{indent}}}" if lines else "{}"
    if isinstance(value, list):
        return "[" + " | ".join(sorted({shape(v, at, host, indent) for v in value})) + "]"
    names = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str"}
    return names[type(value)]


def shapes(documents: list[dict[str, object]]) -> str:
    """Each distinct shape once, after the (device kind, backend, status) it belongs to."""
    grouped: dict[str, list[str]] = {}
    for doc in documents:
        device = doc["device"]
        assert isinstance(device, dict)
        kind = str(device.get("kind", "-"))
        text = shape(doc, host=kind == "local")
        grouped.setdefault(text, []).append(f"{kind} {doc['backend']} {doc['status']}")
    return "".join(f"== {', '.join(names)}\n{text}\n" for text, names in grouped.items())


def test_bench_documents_keep_their_shape(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet")
    out = tmp_path / "results.json"
    with EmulatedPhone("pixel-3a", thermal_time_constant_s=3600.0) as phone:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "bench",
                str(model),
                *("-b", "tvm-cpu", "-b", "ort", "-b", "tvm-nnapi", "-b", "tvm-fpga"),
                # NNAPI feature level 1 has no MEAN: the partition report keeps an operator
                # on the CPU, so its cpu_ops entries have a shape.
                *("-o", "tvm-nnapi.feature_level=1"),
                *("-d", "local", "-d", f"tcp:{phone.serial}", "-d", "serial:1"),
                *("--warmup", "1", "--min-iterations", "5"),
                *("--min-seconds", "0.05", "--max-seconds", "5"),
                "--profile",
                *("--json", str(out)),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert proc.returncode == 1, proc.stderr  # the unknown backend and device fail
    text = out.read_text()
    documents = json.loads(text)
    statuses = [(d["device"].get("kind", "-"), d["backend"], d["status"]) for d in documents]
    assert [s for s in statuses if s[2] == "ok"] == [
        ("local", "tvm-cpu", "ok"),
        ("local", "ort", "ok"),
        ("local", "tvm-nnapi", "ok"),
        ("adb", "tvm-cpu", "ok"),
        ("adb", "tvm-nnapi", "ok"),
    ], proc.stderr
    got, want = shapes(documents), GOLDEN.read_text()
    assert got == want, "".join(
        difflib.unified_diff(
            want.splitlines(keepends=True), got.splitlines(keepends=True), "golden", "now"
        )
    )
    # Each document is the dump of its type: read back and dumped again, the same bytes.
    again = [ResultDocument.model_validate(doc).dump() for doc in documents]
    assert json.dumps(again, indent=2) + "\n" == text


def test_a_cached_artifact_gives_the_same_partition_report_shape_as_a_fresh_build(
    tmp_path: Path,
) -> None:
    """The manifest of a cached artifact is stored with sorted keys; the partition report
    read back from it must still come out in its declared order (found in a test run whose
    processes shared one cache)."""
    model = testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet")
    env = {**os.environ, "COLUMNS": "200", "EDGEFARM_CACHE_DIR": str(tmp_path / "cache")}
    reports = []
    for attempt in ("fresh", "cached"):
        out = tmp_path / f"{attempt}.json"
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "bench", str(model), "-b", "tvm-nnapi",
             "--warmup", "1", "--min-iterations", "3", "--min-seconds", "0.01",
             "--json", str(out)],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        (document,) = json.loads(out.read_text())
        assert document["provenance"]["cache_hit"] is (attempt == "cached")
        reports.append(document["partition"])
    fresh, cached = reports
    assert list(cached) == list(fresh)
    assert [list(op) for op in cached["cpu_ops"]] == [list(op) for op in fresh["cpu_ops"]]
    assert [list(c) for c in cached["by_op_type"].values()] == [
        list(c) for c in fresh["by_op_type"].values()
    ]
