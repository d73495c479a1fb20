"""The dependency direction (DESIGN.md): api -> harness, workers -> harness, never
api <-> workers, and harness imports neither fastapi nor celery.

Each check imports every module of a package in a fresh interpreter and looks at what
``sys.modules`` then holds, so an import buried in a submodule is caught too.

Inside harness, no two of its parts (its packages and top-level modules: ``byoc``,
``compile``, ``config``, ...) import each other. That is read from the source, every import
statement counted wherever it is (inside a function, under ``TYPE_CHECKING``): a lazy import
hides a dependency from ``sys.modules`` but not from the reader.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
failed = {}
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # running a __main__ is not importing it
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed[info.name] = f"{type(exc).__name__}: {exc}"
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"roots": roots, "failed": failed}))
"""

FORBIDDEN = {
    "harness": {"fastapi", "starlette", "celery", "api", "workers"},
    "api": {"workers"},
    "workers": {"api", "fastapi", "starlette"},
}


def loaded_by(package: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, package],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    result = loaded_by(package)
    assert result["failed"] == {}, result["failed"]
    roots = set(result["roots"])  # type: ignore[call-overload]
    assert roots & FORBIDDEN[package] == set()


def _harness_part(module: str) -> str | None:
    """``byoc`` for ``harness.byoc.partition``; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "harness" else None


def _imports(path: Path, module: str) -> set[str]:
    """The absolute names of the modules ``path`` (module ``module``) imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def harness_dependencies() -> dict[str, dict[str, set[str]]]:
    """part -> {part it imports: the files that do}."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted((ROOT / "harness").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        module = ".".join(parts)
        source = _harness_part(module)
        if source is None:
            continue
        for name in _imports(path, module):
            target = _harness_part(name)
            exists = target and (
                (ROOT / "harness" / target).is_dir()
                or (ROOT / "harness" / f"{target}.py").is_file()
            )
            if target and exists and target != source:
                edges[source][target].add(str(rel))
    return edges


def test_no_two_parts_of_harness_import_each_other() -> None:
    edges = harness_dependencies()
    assert {"byoc", "compile", "measure", "devices"} <= set(edges)  # the reading works
    both_ways = sorted(
        f"{a} <-> {b}: {sorted(edges[a][b])} / {sorted(edges[b][a])}"
        for a in edges
        for b in edges[a]
        if a < b and a in edges.get(b, {})
    )
    assert both_ways == []


def test_a_module_run_with_python_m_is_not_imported_by_its_package() -> None:
    # runpy warns (RuntimeWarning) when importing the package has already imported the module
    # it is about to run: api/web/__init__.py once imported the pages, and they the assets.
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "api.web.assets", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "RuntimeWarning" not in proc.stderr, proc.stderr
    assert "uPlot" in proc.stdout + proc.stderr  # it ran: installed, or how to install it


_HEAVY = frozenset({"scipy", "tvm", "torch", "onnxruntime"})


def _modules_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    roots = "sorted({m.split('.')[0] for m in sys.modules})"
    probe = f"{code}\nimport json, sys\nprint(json.dumps({roots}))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["api.main", "harness.cli", "workers.celery_app"])
def test_starting_the_api_the_cli_or_a_worker_loads_no_compiler_or_statistics(module: str) -> None:
    """Each is started often (an API restart, every `edgefarm` command, a respawned worker):
    TVM, PyTorch, onnxruntime and scipy.stats are seconds each, imported where they are used."""
    loaded = _modules_after(f"import {module}")
    assert not loaded & _HEAVY, sorted(loaded & _HEAVY)


def test_the_cli_loads_no_database_numpy_or_http_client_before_a_command_runs() -> None:
    """Every `edgefarm` command pays for what importing the CLI loads: SQLAlchemy and the
    database models (0.3 s) once came with a tuning default's module, doubling `edgefarm suite
    list`'s start. A command imports them in its body."""
    loaded = _modules_after("import harness.cli\nimport harness.cli.tune\nimport harness.cli.ab")
    assert not loaded & {"sqlalchemy", "numpy", "httpx", "onnx"}, sorted(loaded)


def test_a_compile_child_imports_tvm_without_torch_and_torch_still_imports_after() -> None:
    """harness.compile.tvmimport: apache-tvm-ffi would import torch (seconds) in every build."""
    pytest.importorskip("torch")  # installed by `scripts/setup dev torch`, as for the tests
    loaded = _modules_after(
        "from harness.compile.tvmimport import import_tvm\n"
        "import_tvm()\n"
        "import tvm.relax.frontend.onnx\n"
        "import sys; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    assert "tvm" in loaded and "torch" not in loaded
    # A .pt2 model's reader imports torch after TVM; the hiding is gone by then.
    after = _modules_after(
        "from harness.compile.tvmimport import import_tvm\n"
        "import_tvm()\n"
        "import torch\n"
        "from tvm.relax.frontend.torch import from_exported_program"
    )
    assert {"tvm", "torch"} <= after
