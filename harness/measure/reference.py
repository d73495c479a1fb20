"""Reference outputs: the same model run by its own framework's runtime on the host CPU.

ONNX models run in onnxruntime with graph optimizations disabled, TFLite models in LiteRT
with the plain built-in kernels (no XNNPACK delegate): slower, but the closest thing to the
model as written. Any failure of a runtime becomes a one-line JobError ("compare").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import TypedDict

from harness.errors import JobError, one_line


class TensorDetails(TypedDict):
    """What LiteRT's interpreter says of an input tensor (the keys read here)."""

    name: str
    index: int
    shape: npt.NDArray[np.int32]
    dtype: type[np.generic]


def onnx_reference(
    model_bytes: bytes, inputs: dict[str, npt.NDArray[Any]]
) -> list[npt.NDArray[Any]]:
    """Run an ONNX model in onnxruntime (CPU); outputs in the graph's output order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # errors only; the rest is noise in worker logs
    try:
        session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's exceptions share no useful base
        raise JobError(
            "compare", f"onnxruntime cannot load the model: {one_line(str(exc))}"
        ) from exc
    expected = [i.name for i in session.get_inputs()]
    _check_names(expected, inputs, "onnxruntime")
    feeds = {name: np.asarray(inputs[name]) for name in expected}
    try:
        results = session.run(None, feeds)
    except Exception as exc:
        raise JobError(
            "compare", f"onnxruntime failed to run the model: {one_line(str(exc))}"
        ) from exc
    return [np.asarray(r) for r in results]


def _check_names(expected: list[str], inputs: Mapping[str, npt.NDArray[Any]], runtime: str) -> None:
    missing = [n for n in expected if n not in inputs]
    extra = sorted(set(inputs) - set(expected))
    if missing or extra:
        raise JobError(
            "compare",
            f"{runtime}: the model's inputs are {expected}, given {sorted(inputs)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else ""),
        )


_TENSOR_SUFFIX = re.compile(r":\d+$")
_SIGNATURE_PREFIX = "serving_default_"


def tflite_input_aliases(tensor_name: str) -> list[str]:
    """Names by which a TFLite input tensor may be given, most specific first.

    Converters name input tensors after the signature, e.g. ``serving_default_image:0``
    for a Keras input ``image``; users know the last form. So the tensor name, then without
    the ``:N`` suffix, then without the ``serving_default_`` prefix as well.
    """
    names = [tensor_name]
    base = _TENSOR_SUFFIX.sub("", tensor_name)
    names.append(base)
    if base.startswith(_SIGNATURE_PREFIX) and len(base) > len(_SIGNATURE_PREFIX):
        names.append(base[len(_SIGNATURE_PREFIX) :])
    return list(dict.fromkeys(names))


def _match_tflite_inputs(
    details: list[TensorDetails],
    signature_names: dict[int, str],
    inputs: Mapping[str, npt.NDArray[Any]],
) -> dict[int, str]:
    """Tensor index -> key of ``inputs``, by tensor name, its aliases, or signature name."""
    matched: dict[int, str] = {}
    used: set[str] = set()
    for d in details:
        candidates = tflite_input_aliases(str(d["name"]))
        if d["index"] in signature_names:
            candidates.append(signature_names[d["index"]])
        key = next((c for c in candidates if c in inputs and c not in used), None)
        if key is not None:
            matched[d["index"]] = key
            used.add(key)
    unmatched = [str(d["name"]) for d in details if d["index"] not in matched]
    extra = sorted(set(inputs) - used)
    if unmatched or extra:
        raise JobError(
            "compare",
            f"LiteRT: the model's inputs are {[str(d['name']) for d in details]}, "
            f"given {sorted(inputs)}"
            + (f"; no value for {unmatched}" if unmatched else "")
            + (f"; unexpected {extra}" if extra else ""),
        )
    return matched


def tflite_reference(
    model_bytes: bytes, inputs: dict[str, npt.NDArray[Any]]
) -> list[npt.NDArray[Any]]:
    """Run a TFLite model in LiteRT's interpreter; outputs in the subgraph's output order.

    Inputs are matched by tensor name, by the aliases of :func:`tflite_input_aliases`, or by
    the name in the model's (single) signature. An input whose shape differs from the
    tensor's is resized to it, as the interpreter allows for dynamic dimensions.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(
            model_content=bytes(model_bytes),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        details: list[TensorDetails] = interp.get_input_details()
        signature_names = _signature_input_names(interp, details)
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError with C++ text
        raise JobError("compare", f"LiteRT cannot load the model: {one_line(str(exc))}") from exc
    matched = _match_tflite_inputs(details, signature_names, inputs)
    try:
        for d in details:
            shape = np.asarray(inputs[matched[d["index"]]]).shape
            if tuple(int(x) for x in d["shape"]) != shape:
                interp.resize_tensor_input(d["index"], list(shape))
        interp.allocate_tensors()
        for d in details:
            value = np.asarray(inputs[matched[d["index"]]])
            if value.dtype != d["dtype"]:
                raise JobError(
                    "compare",
                    f"LiteRT: input {d['name']!r} is {np.dtype(d['dtype'])}, given {value.dtype}",
                )
            interp.set_tensor(d["index"], np.ascontiguousarray(value))
        interp.invoke()
        return [np.array(interp.get_tensor(o["index"])) for o in interp.get_output_details()]
    except JobError:
        raise
    except Exception as exc:
        raise JobError("compare", f"LiteRT failed to run the model: {one_line(str(exc))}") from exc


def _signature_input_names(interp: Any, details: list[TensorDetails]) -> dict[int, str]:
    """Input tensor index -> signature input name, when the model has exactly one signature.

    A signature may run another subgraph than the interpreter's first; its tensors count only
    where index and tensor name both match an input of the first subgraph.
    """
    signatures = interp.get_signature_list()
    if len(signatures) != 1:
        return {}
    runner = interp.get_signature_runner(next(iter(signatures)))
    ours = {(int(d["index"]), str(d["name"])) for d in details}
    return {
        int(d["index"]): str(name)
        for name, d in runner.get_input_details().items()
        if (int(d["index"]), str(d["name"])) in ours
    }
