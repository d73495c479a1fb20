"""Comparing outputs with a reference: tolerances, NaN, class scores, mismatches."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.errors import JobError
from harness.measure.accuracy import (
    Tolerance,
    compare,
    looks_like_class_scores,
    tolerance_for,
)


def _rng() -> np.random.Generator:
    return np.random.default_rng(11)


def test_identical_outputs_pass() -> None:
    rng = _rng()
    ref: list[np.ndarray] = [
        rng.standard_normal((1, 8, 4, 4)).astype(np.float32),
        np.arange(6, dtype=np.int64),
    ]
    acc = compare([r.copy() for r in ref], ref, reference_name="onnxruntime")
    assert acc.passed
    assert acc.reference == "onnxruntime"
    assert acc.max_abs_err == 0.0
    assert acc.max_rel_err == 0.0
    assert acc.cosine == pytest.approx(1.0)
    assert acc.top1_agree is None  # neither looks like class scores
    assert acc.nan_count == 0
    assert [o.passed for o in acc.per_output] == [True, True]
    assert acc.tolerance == {
        "float32": Tolerance(atol=1e-4, rtol=1e-3),
        "int64": Tolerance(atol=0.0, rtol=0.0),
    }


def test_small_perturbation_passes_large_fails() -> None:
    rng = _rng()
    ref = rng.standard_normal((4, 100)).astype(np.float32)
    # Within atol + rtol * |r| everywhere.
    small = ref + (0.5e-4 + 0.5e-3 * np.abs(ref)).astype(np.float32)
    acc = compare([small], [ref], reference_name="ort")
    assert acc.passed
    assert 0 < acc.max_abs_err < 1e-2
    assert acc.cosine > 0.999999

    big = ref.copy()
    big[2, 17] += 0.05
    acc = compare([big], [ref], reference_name="ort")
    assert not acc.passed
    assert acc.per_output[0].mismatched == 1
    assert acc.max_abs_err == pytest.approx(0.05, rel=1e-3)
    expected_rel = 0.05 / max(abs(float(ref[2, 17])), 1e-4)
    assert acc.max_rel_err == pytest.approx(expected_rel, rel=1e-3)


def test_relative_error_does_not_blow_up_on_exact_zeros() -> None:
    ref = np.zeros((1, 16), np.float32)
    out = np.full((1, 16), 1e-6, np.float32)
    acc = compare([out], [ref], reference_name="ort")
    assert acc.passed
    # Measured against atol (1e-4) rather than 0: 1e-6 / 1e-4.
    assert acc.max_rel_err == pytest.approx(1e-2, rel=1e-3)


def test_nan_in_output_fails_and_is_reported() -> None:
    ref = np.ones((2, 3), np.float32)
    out = ref.copy()
    out[1, 2] = np.nan
    acc = compare([out], [ref], reference_name="ort")
    assert not acc.passed
    assert acc.nan_count == 1
    assert acc.per_output[0].nan_count == 1
    assert math.isnan(acc.max_abs_err)
    assert math.isnan(acc.cosine)
    d = acc.to_dict()
    assert d["max_abs_err"] is None  # JSON-safe
    assert d["passed"] is False
    assert d["nan_count"] == 1
    json.dumps(d, allow_nan=False)


def test_nan_in_both_agrees() -> None:
    ref = np.array([1.0, np.nan, np.inf, -2.0], np.float32)
    acc = compare([ref.copy()], [ref], reference_name="ort")
    assert acc.passed
    assert acc.max_abs_err == 0.0
    assert acc.cosine == pytest.approx(1.0)


def test_inf_where_reference_is_finite_fails() -> None:
    ref = np.array([1.0, 2.0], np.float32)
    out = np.array([1.0, np.inf], np.float32)
    acc = compare([out], [ref], reference_name="ort")
    assert not acc.passed
    assert acc.max_abs_err == math.inf
    assert acc.to_dict()["max_abs_err"] is None
    # A finite output, or the other infinity, where the reference is infinite.
    ref_inf = np.array([np.inf, -np.inf], np.float32)
    for out in (np.array([1.0, -np.inf], np.float32), np.array([np.inf, np.inf], np.float32)):
        acc = compare([out], [ref_inf], reference_name="ort")
        assert not acc.passed
        assert acc.per_output[0].mismatched == 1


def test_class_scores_top1() -> None:
    ref = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]], np.float32)
    out = ref.copy()
    out[1] = [0.3, 0.5, 0.2]  # argmax 0 -> 1
    acc = compare([out], [ref], reference_name="ort")
    assert acc.top1_agree == pytest.approx(0.75)
    assert acc.per_output[0].top1_agree == pytest.approx(0.75)
    assert not acc.passed

    probs = np.array([[[[0.1, 0.9]]]], np.float32)  # [1, 1, 1, 2]
    acc = compare([probs.copy()], [probs], reference_name="ort")
    assert acc.top1_agree == 1.0


def test_top1_pooled_over_class_outputs_only() -> None:
    scores_a = np.array([[0.9, 0.1]], np.float32)
    scores_b = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], np.float32)
    features = np.ones((1, 4, 2, 2), np.float32)  # not class scores
    out_b = scores_b.copy()
    out_b[1] = [0.4, 0.6]
    acc = compare([scores_a, features, out_b], [scores_a, features, scores_b], reference_name="ort")
    # 1 of 1 rows agree in the first, 2 of 3 in the third: 3 of 4 pooled.
    assert acc.top1_agree == pytest.approx(0.75)
    assert acc.per_output[1].top1_agree is None


@pytest.mark.parametrize(
    ("shape", "dtype", "expected"),
    [
        ((1, 10), np.float32, True),
        ((8, 1000), np.float16, True),
        ((1, 1, 1, 5), np.float32, True),
        ((1, 1), np.float32, False),
        ((10,), np.float32, False),
        ((2, 3, 4), np.float32, False),
        ((1, 10), np.int64, False),
        ((1, 10), np.uint8, False),
    ],
)
def test_looks_like_class_scores(shape: tuple[int, ...], dtype: type, expected: bool) -> None:
    assert looks_like_class_scores(shape, dtype) is expected


def test_float16_tolerance() -> None:
    ref = np.array([[1.0, -2.0, 0.0]], np.float16)
    out = np.array([[1.015, -2.02, 0.009]], np.float16)
    acc = compare([out], [ref], reference_name="ort")
    assert acc.passed
    assert acc.per_output[0].tolerance == Tolerance(atol=1e-2, rtol=1e-2)
    out2 = np.array([[1.05, -2.0, 0.0]], np.float16)
    assert not compare([out2], [ref], reference_name="ort").passed


def test_quantized_allow_one_step() -> None:
    ref = np.array([0, 127, 255, 3], np.uint8)
    ok = np.array([1, 126, 254, 3], np.uint8)  # would wrap around in uint8 arithmetic
    acc = compare([ok], [ref], reference_name="litert")
    assert acc.passed
    assert acc.max_abs_err == 1.0
    bad = np.array([2, 127, 255, 3], np.uint8)
    assert not compare([bad], [ref], reference_name="litert").passed
    ref8 = np.array([-128, 127], np.int8)
    assert compare([np.array([-127, 126], np.int8)], [ref8], reference_name="x").passed


def test_integer_and_bool_exact() -> None:
    ref = np.array([3, 4, 5], np.int32)
    assert not compare([np.array([3, 4, 6], np.int32)], [ref], reference_name="x").passed
    b = np.array([True, False])
    assert compare([b.copy()], [b], reference_name="x").passed
    assert not compare([~b], [b], reference_name="x").passed
    assert tolerance_for(np.int64) == Tolerance(0.0, 0.0)
    assert tolerance_for(np.float64) == Tolerance(1e-6, 1e-5)


def test_cosine_over_all_outputs_together() -> None:
    a = [np.array([1.0, 0.0], np.float32), np.array([0.0], np.float32)]
    r = [np.array([0.0, 1.0], np.float32), np.array([0.0], np.float32)]
    assert compare(a, r, reference_name="x").cosine == pytest.approx(0.0)
    z = [np.zeros(3, np.float32)]
    assert compare(z, [np.zeros(3, np.float32)], reference_name="x").cosine == 1.0
    assert compare([-r[0]], [r[0]], reference_name="x").cosine == pytest.approx(-1.0)
    # Huge values neither overflow nor lose the direction.
    big = [np.array([1e200, 2e200])]
    assert compare(big, [np.array([1e200, 2e200])], reference_name="x").cosine == pytest.approx(1.0)


def test_count_mismatch_is_job_error() -> None:
    x = np.zeros((1, 2), np.float32)
    with pytest.raises(JobError, match="2 outputs") as info:
        compare([x, x], [x], reference_name="ort")
    assert info.value.stage == "compare"


def test_shape_mismatch_names_index_and_shapes() -> None:
    x = np.zeros((1, 2), np.float32)
    with pytest.raises(JobError, match=r"output 1: shape \(2, 1\).*\(1, 2\)") as info:
        compare([x, x.reshape(2, 1)], [x, x], reference_name="ort")
    assert info.value.stage == "compare"


def test_dtype_mismatch_names_index_and_shapes() -> None:
    x = np.zeros((1, 2), np.float32)
    with pytest.raises(JobError, match=r"output 0: dtype float64 .*float32.*\(1, 2\)"):
        compare([x.astype(np.float64)], [x], reference_name="ort")


def test_unsupported_dtype_is_job_error() -> None:
    x = np.array(["a"])
    with pytest.raises(JobError, match="cannot be compared"):
        compare([x], [x], reference_name="ort")


def test_to_dict_keys_and_json() -> None:
    ref = np.array([[0.2, 0.8]], np.float32)
    d = compare([ref.copy()], [ref], reference_name="onnxruntime").to_dict()
    for key in ["reference", "max_abs_err", "max_rel_err", "cosine", "top1_agree", "passed"]:
        assert key in d
    assert d["reference"] == "onnxruntime"
    assert d["top1_agree"] == 1.0
    assert d["per_output"][0]["shape"] == [1, 2]
    assert d["tolerance"] == {"float32": {"atol": 1e-4, "rtol": 1e-3}}
    json.dumps(d, allow_nan=False)


def test_empty_output_lists() -> None:
    acc = compare([], [], reference_name="ort")
    assert acc.passed
    assert acc.cosine == 1.0
    assert acc.max_abs_err == 0.0
