"""Seeded random inputs and user inputs from .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.errors import JobError
from harness.measure.inputs import load_inputs_npz, make_inputs

SPECS = [
    ("image", (1, 3, 8, 8), "float32"),
    ("ids", (1, 16), "int64"),
    ("mask", (1, 16), "bool"),
    ("half", (2, 5), "float16"),
    ("q", (4,), "uint8"),
]


def test_make_inputs_shapes_dtypes_ranges() -> None:
    x = make_inputs(SPECS, seed=0)
    assert list(x) == [name for name, _, _ in SPECS]
    for name, shape, dtype in SPECS:
        assert x[name].shape == shape, name
        assert x[name].dtype == np.dtype(dtype), name
    assert np.abs(x["image"]).max() <= 3.0
    assert 0.5 < float(np.std(x["image"])) < 1.5
    assert x["ids"].min() >= 0 and x["ids"].max() < 10
    assert x["q"].max() < 10
    assert np.isfinite(x["half"]).all()


def test_make_inputs_deterministic_and_seeded() -> None:
    a, b, c = make_inputs(SPECS, 5), make_inputs(SPECS, 5), make_inputs(SPECS, 6)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["image"], c["image"])


def test_make_inputs_independent_of_other_inputs() -> None:
    alone = make_inputs([SPECS[0]], 1)
    together = make_inputs(SPECS[::-1], 1)
    np.testing.assert_array_equal(alone["image"], together["image"])


def test_make_inputs_bool_is_random() -> None:
    m = make_inputs([("m", (1000,), "bool")], 0)["m"]
    assert 300 < int(m.sum()) < 700


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([("x", (1, -1), "float32")], "dynamic shape"),
        ([("x", (1,), "float32"), ("x", (2,), "float32")], "twice"),
        ([("x", (1,), "notadtype")], "unknown dtype 'notadtype'"),
        ([("x", (1,), "complex64")], "not supported"),
    ],
)
def test_make_inputs_bad_specs(specs: list[tuple[str, tuple[int, ...], str]], message: str) -> None:
    with pytest.raises(JobError, match=message) as info:
        make_inputs(specs, 0)
    assert info.value.stage == "prepare"


def _save(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "inputs.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_load_roundtrip_in_spec_order(tmp_path: Path) -> None:
    x = make_inputs(SPECS, 3)
    path = _save(tmp_path, **dict(reversed(list(x.items()))))
    loaded = load_inputs_npz(path, SPECS)
    assert list(loaded) == list(x)
    for name in x:
        np.testing.assert_array_equal(loaded[name], x[name])
        assert loaded[name].dtype == x[name].dtype


def test_load_missing_input(tmp_path: Path) -> None:
    path = _save(tmp_path, image=np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(JobError, match=r"lacks input\(s\) \['ids'\]") as info:
        load_inputs_npz(path, SPECS[:2])
    assert info.value.stage == "prepare"


def test_load_extra_input(tmp_path: Path) -> None:
    path = _save(tmp_path, image=np.zeros((1, 3, 8, 8), np.float32), junk=np.zeros(1))
    with pytest.raises(JobError, match=r"unexpected input\(s\) \['junk'\]"):
        load_inputs_npz(path, SPECS[:1])


def test_load_wrong_shape(tmp_path: Path) -> None:
    path = _save(tmp_path, image=np.zeros((1, 3, 9, 8), np.float32))
    with pytest.raises(
        JobError, match=r"input 'image': expected shape \(1, 3, 8, 8\), found \(1, 3, 9, 8\)"
    ):
        load_inputs_npz(path, SPECS[:1])


def test_load_wrong_dtype(tmp_path: Path) -> None:
    path = _save(tmp_path, image=np.zeros((1, 3, 8, 8), np.float64))
    with pytest.raises(
        JobError, match=r"input 'image': expected dtype float32, found float64.*cast safely"
    ):
        load_inputs_npz(path, SPECS[:1])


def test_load_safe_cast(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        image=np.ones((1, 3, 8, 8), np.float16),
        ids=np.arange(16, dtype=np.int32).reshape(1, 16),
    )
    loaded = load_inputs_npz(path, SPECS[:2])
    assert loaded["image"].dtype == np.float32
    assert loaded["ids"].dtype == np.int64
    np.testing.assert_array_equal(loaded["ids"], np.arange(16).reshape(1, 16))


def test_load_not_npz(tmp_path: Path) -> None:
    single = tmp_path / "x.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(JobError, match="single array"):
        load_inputs_npz(single, SPECS[:1])
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(JobError, match=r"not a readable \.npz"):
        load_inputs_npz(garbage, SPECS[:1])
    with pytest.raises(JobError, match="does not exist"):
        load_inputs_npz(tmp_path / "missing.npz", SPECS[:1])


def test_load_object_array_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, image=np.array([{"a": 1}], dtype=object))
    with pytest.raises(JobError, match=r"not a readable \.npz") as info:
        load_inputs_npz(path, SPECS[:1])
    assert info.value.stage == "prepare"
