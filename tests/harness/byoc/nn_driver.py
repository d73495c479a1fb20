"""The host reference driver loaded with ctypes: build NNAPI / Neuron models through its real
C API (built as a shared library at one NNAPI feature level), as generated code does."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.byoc.api_rules import RULES, TYPE_CODES
from harness.byoc.link import host_driver_shared
from harness.byoc.nnmodel import OPERAND_TYPES, NNModel

# Result codes, as documented (NeuralNetworksTypes.h ResultCode, NeuronAdapter.h).
NO_ERROR = 0
UNEXPECTED_NULL = 3
BAD_DATA = 4
NEURON_BAD_DATA = 4
BAD_STATE_NNAPI = 6


class OperandType(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int32),
        ("dimensionCount", ctypes.c_uint32),
        ("dimensions", ctypes.POINTER(ctypes.c_uint32)),
        ("scale", ctypes.c_float),
        ("zeroPoint", ctypes.c_int32),
    ]


class Driver:
    """One build of the driver; ``api`` chooses the face (``nnapi``: ``ANeuralNetworks*``,
    ``neuron``: ``Neuron*``)."""

    def __init__(self, level: int, api: str = "nnapi") -> None:
        self.lib = ctypes.CDLL(str(host_driver_shared(level)))
        self.prefix = "ANeuralNetworks" if api == "nnapi" else "Neuron"
        self.api = api

    def fn(self, name: str) -> Any:
        return getattr(self.lib, self.prefix + name)

    def runtime_feature_level(self) -> int:
        f = self.lib.ANeuralNetworks_getRuntimeFeatureLevel
        f.restype = ctypes.c_int64
        return int(f())


class Model:
    """A model under construction; each call returns the API's result code."""

    def __init__(self, driver: Driver) -> None:
        self.d = driver
        self.handle = ctypes.c_void_p()
        assert driver.fn("Model_create")(ctypes.byref(self.handle)) == NO_ERROR
        self._keep: list[Any] = []
        self.n = 0

    def operand(self, type_name: str, dims: Sequence[int] = ()) -> int:
        arr = (ctypes.c_uint32 * max(len(dims), 1))(*dims)
        self._keep.append(arr)
        t = OperandType(TYPE_CODES[type_name], len(dims), arr if dims else None, 0.0, 0)
        rc = self.d.fn("Model_addOperand")(self.handle, ctypes.byref(t))
        assert rc == NO_ERROR, f"addOperand({type_name}, {dims}) -> {rc}"
        self.n += 1
        return self.n - 1

    def value(self, index: int, data: bytes) -> int:
        buf = ctypes.create_string_buffer(data, len(data))
        self._keep.append(buf)
        return int(self.d.fn("Model_setOperandValue")(self.handle, index, buf, len(data)))

    def scalar(self, type_name: str, value: float | int | bool) -> int:
        index = self.operand(type_name)
        fmt = {"INT32": np.int32, "FLOAT32": np.float32, "BOOL": np.uint8}[type_name]
        assert self.value(index, np.array([value], fmt).tobytes()) == NO_ERROR
        return index

    def ivec(self, values: Sequence[int]) -> int:
        index = self.operand("TENSOR_INT32", [len(values)])
        assert self.value(index, np.array(values, np.int32).tobytes()) == NO_ERROR
        return index

    def const(self, dims: Sequence[int]) -> int:
        index = self.operand("TENSOR_FLOAT32", dims)
        assert self.value(index, np.zeros(dims, np.float32).tobytes()) == NO_ERROR
        return index

    def operation(self, name: str, inputs: Sequence[int] | None, outputs: Sequence[int]) -> int:
        code = RULES[name].code
        ins = (ctypes.c_uint32 * max(len(inputs or ()), 1))(*(inputs or ()))
        outs = (ctypes.c_uint32 * len(outputs))(*outputs)
        return int(
            self.d.fn("Model_addOperation")(
                self.handle,
                code,
                len(inputs) if inputs is not None else 1,
                ins if inputs is not None else None,
                len(outputs),
                outs,
            )
        )

    def identify(self, inputs: Sequence[int], outputs: Sequence[int]) -> int:
        ins = (ctypes.c_uint32 * max(len(inputs), 1))(*inputs)
        outs = (ctypes.c_uint32 * max(len(outputs), 1))(*outputs)
        return int(
            self.d.fn("Model_identifyInputsAndOutputs")(
                self.handle, len(inputs), ins, len(outputs), outs
            )
        )

    def finish(self) -> int:
        return int(self.d.fn("Model_finish")(self.handle))

    def free(self) -> None:
        self.d.fn("Model_free")(self.handle)


def replay(driver: Driver, nn: NNModel) -> tuple[str, int]:
    """Builds ``nn`` (what the translator emitted) through the driver as the generated C does;
    returns the step that failed (or ``finished``) and its result code."""
    m = Model(driver)
    for op in nn.operands:
        type_name = OPERAND_TYPES[op.kind]
        if op.kind == "i32vec":
            m.ivec(op.value)
            continue
        if op.kind in ("i32", "f32", "bool"):
            m.scalar(type_name, op.value)
            continue
        index = m.operand(type_name, op.dims)
        if op.kind == "f32vec":
            assert m.value(index, np.array(op.value, np.float32).tobytes()) == NO_ERROR
        elif op.kind in ("const", "zeros"):
            assert m.value(index, np.zeros(op.dims, np.float32).tobytes()) == NO_ERROR
    for operation in nn.operations:
        rc = m.operation(operation.code, operation.inputs, operation.outputs)
        if rc != NO_ERROR:
            return f"addOperation({operation.code})", rc
    rc = m.identify([io.operand for io in nn.inputs], [io.operand for io in nn.outputs])
    if rc != NO_ERROR:
        return "identifyInputsAndOutputs", rc
    rc = m.finish()
    m.free()
    return ("finished" if rc == NO_ERROR else "finish"), rc
