"""``import tvm`` without PyTorch, for a process that only builds.

apache-tvm-ffi imports torch first thing whenever it is installed (a workaround for a symbol
clash seen on Windows), and TVM's Relax then loads torch.export: on this farm's machines about
two seconds of CPU on top of TVM's own three or four, in every compile child (one per build)
of a farm that installed PyTorch to read ``.pt2`` models. A build needs nothing of torch except
to read a ``.pt2`` model, and that reader imports torch itself, after TVM, which works.
"""

from __future__ import annotations

import sys
from types import ModuleType


def import_tvm() -> ModuleType:
    """``tvm``, imported with torch hidden (unless torch is imported already)."""
    if "tvm" in sys.modules:
        return sys.modules["tvm"]
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails at once
    try:
        import tvm
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    module: ModuleType = tvm
    return module
