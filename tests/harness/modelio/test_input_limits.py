"""Input sizes are bounded where a model is prepared, so nothing of an oversized input is
ever made (the API checks the same function at submission)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import JobError
from harness.modelio import (
    InputLimits,
    InputTooLarge,
    TensorSpec,
    check_input_sizes,
    load,
    parse_input_spec,
)

import testmodels

LIMITS = InputLimits(max_elements=1000, max_bytes=2000, max_total_bytes=3000)


def test_each_input_and_the_total_are_bounded() -> None:
    check_input_sizes([TensorSpec("x", (10, 50), "float32")], LIMITS)  # 500 elements, 2000 B
    with pytest.raises(InputTooLarge, match=r"'x' \(10x101 int8\) has 1010 elements") as info:
        check_input_sizes([TensorSpec("x", (10, 101), "int8")], LIMITS)
    assert info.value.name == "x" and info.value.stage == "prepare"
    with pytest.raises(InputTooLarge, match="EDGEFARM_MAX_INPUT_MB") as info:
        check_input_sizes([TensorSpec("y", (251,), "int64")], LIMITS)  # 2008 bytes
    assert info.value.name == "y"
    two = [TensorSpec("a", (400,), "float32"), TensorSpec("b", (400,), "float32")]
    check_input_sizes(two[:1], LIMITS)
    with pytest.raises(InputTooLarge, match="together are") as info:
        check_input_sizes(two, LIMITS)  # 1600 + 1600 > 3000
    assert info.value.name is None
    # A dynamic input cannot be made at all; it is not counted.
    check_input_sizes([TensorSpec("d", ("batch", 10**9), "float32")], LIMITS)


def test_prepare_refuses_before_making_anything(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.dynamic_batch(seed=1), tmp_path, "dyn")
    spec = parse_input_spec("images:1000000000x3x8x8")  # 715 GiB
    with pytest.raises(InputTooLarge, match="'images'"):
        load(path, [spec])
    small = InputLimits(max_elements=10**6, max_bytes=2**20, max_total_bytes=2**20)
    assert load(path, [parse_input_spec("images:2x3x8x8")], limits=small).inputs[0].shape == (
        2,
        3,
        8,
        8,
    )
    with pytest.raises(InputTooLarge):
        load(path, [parse_input_spec("images:2000x3x8x8")], limits=small)  # 1.5 MiB


@pytest.mark.parametrize("digits", [11, 900, 5000])
def test_a_dimension_beyond_int32_is_refused_without_converting_it(digits: int) -> None:
    with pytest.raises(JobError, match="dimension over 2147483647"):
        parse_input_spec("x:" + "9" * digits + "x3")
    assert parse_input_spec("x:2147483647").shape == (2147483647,)
    with pytest.raises(JobError, match="dimension over"):
        parse_input_spec("x:2147483648")
