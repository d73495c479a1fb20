"""Benchmark inputs: seeded random tensors, or the user's own from an ``.npz`` file.

An input spec is ``(name, shape, dtype)`` with a concrete shape and a numpy dtype name
(``"float32"``, ``"int64"``, ``"bool"``...).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.errors import JobError

SpecTuple = tuple[str, tuple[int, ...], str]

# Random floats are standard normal clipped to +-FLOAT_CLIP: the scale of normalized images,
# audio features and embeddings, with no outliers that would overflow float16.
FLOAT_CLIP = 3.0
# Random integers are drawn from [0, INT_HIGH): valid as token ids, indices and class labels
# for any vocabulary, and as quantized values.
INT_HIGH = 10


def _spec_dtype(name: str, dtype: str) -> np.dtype[Any]:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise JobError("prepare", f"input {name!r}: unknown dtype {dtype!r}") from exc
    if dt.kind not in "fiub":
        raise JobError("prepare", f"input {name!r}: dtype {dt} is not supported (numbers or bool)")
    return dt


def _check_specs(specs: Sequence[SpecTuple]) -> list[tuple[str, tuple[int, ...], np.dtype[Any]]]:
    seen: set[str] = set()
    checked = []
    for name, shape, dtype in specs:
        if name in seen:
            raise JobError("prepare", f"input {name!r} is specified twice")
        seen.add(name)
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise JobError(
                "prepare",
                f"input {name!r} has a dynamic shape {dims}; fix its dimensions first",
            )
        checked.append((name, dims, _spec_dtype(name, dtype)))
    return checked


def make_inputs(specs: Sequence[SpecTuple], seed: int) -> dict[str, npt.NDArray[Any]]:
    """Seeded random inputs for ``specs``, in spec order.

    Floats: standard normal clipped to +-3. Integers: uniform in [0, 10). Bool: fair coin.
    Each input's stream depends on the seed and its name only, so adding or reordering
    inputs leaves the others unchanged.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out: dict[str, npt.NDArray[Any]] = {}
    for name, shape, dt in _check_specs(specs):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        if dt.kind == "f":
            x = np.clip(rng.standard_normal(shape), -FLOAT_CLIP, FLOAT_CLIP)
            out[name] = x.astype(dt)
        elif dt.kind == "b":
            out[name] = rng.integers(0, 2, size=shape).astype(dt)
        else:
            out[name] = rng.integers(0, INT_HIGH, size=shape).astype(dt)
    return out


def load_inputs_npz(
    path: str | PathLike[str], specs: Sequence[SpecTuple]
) -> dict[str, npt.NDArray[Any]]:
    """Load the user's inputs from an ``.npz`` file and check them against ``specs``.

    Names must match exactly (none missing, none extra) and shapes must be equal. A dtype
    that numpy casts safely to the expected one (int8 -> int32, float16 -> float32...) is
    cast; any other is a JobError ("prepare") saying what was expected and what was found.
    Returns the arrays in spec order.
    """
    checked = _check_specs(specs)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise JobError(
                "prepare",
                f"inputs file {str(path)!r} holds a single array, not named inputs: "
                "save them with numpy.savez(path, name=array, ...)",
            )
        with loaded:
            found = {key: loaded[key] for key in loaded.files}
    except FileNotFoundError as exc:
        raise JobError("prepare", f"inputs file {str(path)!r} does not exist") from exc
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise JobError(
            "prepare", f"inputs file {str(path)!r} is not a readable .npz archive: {exc}"
        ) from exc
    expected_names = [name for name, _, _ in checked]
    missing = [n for n in expected_names if n not in found]
    if missing:
        raise JobError(
            "prepare",
            f"inputs file lacks input(s) {missing}; expected {expected_names}, "
            f"found {sorted(found)}",
        )
    extra = sorted(set(found) - set(expected_names))
    if extra:
        raise JobError(
            "prepare",
            f"inputs file has unexpected input(s) {extra}; expected only {expected_names}",
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for name, shape, dt in checked:
        arr = found[name]
        if arr.shape != shape:
            raise JobError("prepare", f"input {name!r}: expected shape {shape}, found {arr.shape}")
        if arr.dtype != dt:
            if not np.can_cast(arr.dtype, dt, casting="safe"):
                raise JobError(
                    "prepare",
                    f"input {name!r}: expected dtype {dt}, found {arr.dtype}, "
                    "which does not cast safely",
                )
            arr = arr.astype(dt)
        out[name] = arr
    return out
