"""Input specs: ``NAME:1x3x224x224[:float32]`` from the command line, and tensor descriptions."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import MISSING, BaseModel, ConfigDict
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.errors import JobError

if TYPE_CHECKING:
    from harness.config import Settings

# The dtypes edgefarm moves between host, runner and reference (numpy names).
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
_DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16"}
ITEMSIZE = {
    "float32": 4,
    "float16": 2,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "bool": 1,
}
# The largest size one dimension may be given (int32, as the runtimes index shapes); a longer
# number is refused before Python converts it (ints over 4300 digits raise ValueError).
MAX_DIM = 2**31 - 1

Dim = int | str  # a static size, or the name of a dynamic dimension ("?" when unnamed)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (static ints or dynamic names), numpy dtype."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    def static_shape(self) -> tuple[int, ...]:
        if not self.is_static:
            raise JobError("prepare", f"input {self.name!r} has dynamic shape {self.shape_str()}")
        return tuple(int(d) for d in self.shape)

    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.shape) or "scalar"

    def to_dict(self) -> TensorJson:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class TensorJson(TypedDict):
    """A :class:`TensorSpec` as JSON (a model's declared inputs, a manifest's)."""

    name: str
    shape: list[Dim]
    dtype: str


class ModelDescription(BaseModel):
    """The ``model`` object of a result document. ``sha256`` and ``format`` are None, and
    ``size`` and ``outputs`` absent, when the file could not be read as a model."""

    model_config = ConfigDict(extra="allow")

    name: str
    sha256: str | None
    format: str | None
    size: int | MISSING = MISSING
    inputs: list[TensorSpec]
    outputs: list[TensorSpec] | MISSING = MISSING


@dataclass(frozen=True)
class InputSpec:
    """What the user said about one input: its static shape and, optionally, its dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str | None = None

    def __str__(self) -> str:
        text = f"{self.name}:{'x'.join(map(str, self.shape))}"
        return f"{text}:{self.dtype}" if self.dtype else text


def normalize_dtype(text: str) -> str:
    dtype = _DTYPE_ALIASES.get(text.strip().lower(), text.strip().lower())
    if dtype not in DTYPES:
        raise JobError("prepare", f"unknown dtype {text!r}; use one of {', '.join(DTYPES)}")
    return dtype


_SPEC = re.compile(r"^(?P<name>.+?):(?P<shape>\d+(?:x\d+)*|scalar)(?::(?P<dtype>[A-Za-z0-9]+))?$")


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``NAME:1x3x224x224[:float32]`` (``NAME:scalar`` for a 0-d input).

    The name may itself contain colons (ONNX names often do): the shape is the last
    ``AxBxC`` group, optionally followed by a dtype.
    """
    match = _SPEC.match(text.strip())
    if match is None:
        raise JobError(
            "prepare",
            f"cannot read input spec {one_line_spec(text)}; write NAME:1x3x224x224 or "
            "NAME:1x3x224x224:float32",
        )
    shape_text = match["shape"]
    digits = [] if shape_text == "scalar" else shape_text.split("x")
    if any(len(d.lstrip("0")) > len(str(MAX_DIM)) or int(d) > MAX_DIM for d in digits):
        raise JobError(
            "prepare", f"input spec {one_line_spec(text)} has a dimension over {MAX_DIM}"
        )
    shape = tuple(int(d) for d in digits)
    if any(d == 0 for d in shape):
        raise JobError("prepare", f"input spec {text!r} has a zero-sized dimension")
    dtype = normalize_dtype(match["dtype"]) if match["dtype"] else None
    return InputSpec(name=match["name"], shape=shape, dtype=dtype)


def resolve_inputs(
    declared: list[TensorSpec], given: list[InputSpec], *, model_name: str
) -> list[TensorSpec]:
    """Combine the model's declared inputs with the user's specs into static TensorSpecs.

    Every given spec must name a declared input; a given shape must agree with the declared
    static dimensions and rank; every dynamic dimension left without a spec is a JobError that
    names the input and the dimension.
    """
    by_name = {spec.name: spec for spec in given}
    names = [d.name for d in declared]
    for wanted in given:
        if wanted.name not in names:
            raise JobError(
                "prepare",
                f"--input names {wanted.name!r}, but {model_name} has inputs "
                f"{', '.join(repr(n) for n in names) or '(none)'}",
            )
    if len(by_name) != len(given):
        raise JobError("prepare", "an input is given more than once with --input")
    resolved: list[TensorSpec] = []
    for decl in declared:
        spec = by_name.get(decl.name)
        if spec is None:
            for axis, dim in enumerate(decl.shape):
                if not (isinstance(dim, int) and dim >= 0):
                    raise JobError(
                        "prepare",
                        f"input {decl.name!r} of {model_name} has dynamic dimension {axis} "
                        f"({dim!r}) in shape {decl.shape_str()}; give its size with "
                        f"--input {decl.name}:{_example_shape(decl.shape)}",
                    )
            resolved.append(decl)
            continue
        if len(spec.shape) != len(decl.shape):
            raise JobError(
                "prepare",
                f"input {decl.name!r} has rank {len(decl.shape)} (shape {decl.shape_str()}), "
                f"but --input gives rank {len(spec.shape)} ({spec})",
            )
        for axis, (want, got) in enumerate(zip(decl.shape, spec.shape, strict=True)):
            if isinstance(want, int) and want >= 0 and want != got:
                raise JobError(
                    "prepare",
                    f"input {decl.name!r} dimension {axis} is fixed at {want} in the model "
                    f"(shape {decl.shape_str()}), but --input gives {got}",
                )
        if spec.dtype is not None and spec.dtype != decl.dtype:
            raise JobError(
                "prepare",
                f"input {decl.name!r} is {decl.dtype} in the model, but --input says {spec.dtype}",
            )
        resolved.append(TensorSpec(decl.name, spec.shape, decl.dtype))
    return resolved


def _example_shape(shape: tuple[Dim, ...]) -> str:
    return "x".join(str(d) if isinstance(d, int) and d >= 0 else "1" for d in shape) or "scalar"


def one_line_spec(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message, shortened when long (a spec may be any length)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


@dataclass(frozen=True)
class InputLimits:
    """How large one benchmark's inputs may be: elements and bytes of each input, and bytes
    of all of them together."""

    max_elements: int
    max_bytes: int
    max_total_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> InputLimits:
        """The limits of ``settings`` (EDGEFARM_MAX_INPUT_ELEMENTS, _MAX_INPUT_MB,
        _MAX_INPUTS_MB)."""
        return cls(
            max_elements=settings.max_input_elements,
            max_bytes=settings.max_input_mb * 2**20,
            max_total_bytes=settings.max_inputs_mb * 2**20,
        )

    @classmethod
    def default(cls) -> InputLimits:
        from harness.config import get_settings

        return cls.of(get_settings())


class InputTooLarge(JobError):
    """A resolved input (or all of them) over :class:`InputLimits`; ``name`` is the input's,
    None when only the total is over."""

    def __init__(self, name: str | None, message: str) -> None:
        super().__init__("prepare", message)
        self.name = name


def _mib(size: int) -> str:
    return f"{size / 2**20:.6g} MiB"


def check_input_sizes(inputs: Sequence[TensorSpec], limits: InputLimits) -> None:
    """:class:`InputTooLarge` naming the input and its size when a static input is over the
    limits, or when all together are. Dynamic inputs are not counted (they cannot be
    allocated anyway)."""
    total = 0
    for spec in inputs:
        if not spec.is_static:
            continue
        elements = math.prod(spec.static_shape())
        size = elements * ITEMSIZE.get(spec.dtype, 8)
        what = f"input {spec.name!r} ({spec.shape_str()} {spec.dtype}) has {elements} elements"
        if elements > limits.max_elements:
            raise InputTooLarge(
                spec.name,
                f"{what} ({_mib(size)}); the farm allows at most {limits.max_elements} "
                "elements per input (EDGEFARM_MAX_INPUT_ELEMENTS)",
            )
        if size > limits.max_bytes:
            raise InputTooLarge(
                spec.name,
                f"{what}, {_mib(size)}; the farm allows at most {_mib(limits.max_bytes)} "
                "per input (EDGEFARM_MAX_INPUT_MB)",
            )
        total += size
    if total > limits.max_total_bytes:
        raise InputTooLarge(
            None,
            f"the inputs together are {_mib(total)}; the farm allows at most "
            f"{_mib(limits.max_total_bytes)} (EDGEFARM_MAX_INPUTS_MB)",
        )
