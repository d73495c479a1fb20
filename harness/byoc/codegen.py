"""``relax.ext.nnapi`` and ``relax.ext.neuron``: offloaded subgraphs -> C source modules.

``RunCodegen`` hands each codegen the functions the partitioner marked for it. For each one,
:mod:`harness.byoc.translate` builds an NNAPI-family model (operands and operations) and
:func:`emit_c` writes it as C in the dialect's spelling: on first call the C builds the model
(operands with types, constant data from the weights passed in as arguments, operations,
inputs and outputs), finishes it and compiles it with the execution preference; on every call
it creates an execution, binds the argument tensors (NCHW <-> NHWC transposes where needed),
computes and waits. The model holds the weights of the first call; a later call with other
weights is an error, not a silent wrong answer (weights are checked by pointer, and by
checksum when the pointer moved). The C exports ``__tvm_ffi_<global_symbol>`` with TVM FFI's
safe-call signature. Register with :func:`register_codegens` (explicit, not at import).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from harness.byoc.dialect import DEFAULT_FEATURE_LEVEL, DIALECTS, NEURON_LEVEL, Dialect
from harness.byoc.translate import (
    Const,
    ModelIO,
    NNModel,
    Refused,
    Tensor,
    Value,
    layout_of,
    permuted,
    tensor_shape,
    translate_bindings,
)
from harness.errors import HarnessBug

log = logging.getLogger(__name__)

CONST_PARAMS_ATTR = "edgefarm_const_params"
# The values of constant arguments of one element ({"index": value}, JSON): what a hard-swish's
# 3 and 6 are, known when the model is built.
CONST_SCALARS_ATTR = "edgefarm_const_scalars"


# ------------------------------------------------------------------------------------------
# Function -> NNModel
# ------------------------------------------------------------------------------------------


def _bindings(func: Any) -> tuple[list[Any], Any]:
    from tvm import relax

    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return [], body
    out = []
    for block in body.blocks:
        out.extend(block.bindings)
    return out, body.body


def build_model(func: Any, dialect: Dialect, feature_level: int) -> NNModel:
    """The NN model of one offloaded (merged) function."""
    from tvm import relax

    level = NEURON_LEVEL if dialect.name == "neuron" else feature_level
    model = NNModel(dialect.name, level)
    const_params = {int(i) for i in (func.attrs.get(CONST_PARAMS_ATTR) or [])}
    scalars = {
        int(k): float(v)
        for k, v in json.loads(str(func.attrs.get(CONST_SCALARS_ATTR) or "{}")).items()
    }
    scope: dict[Any, Value] = {}
    for index, param in enumerate(func.params):
        shape = tensor_shape(param, f"argument {index}")
        if index in const_params:
            scope[param] = Const(index, shape, scalars.get(index))

    def lookup_outer(expr: Any) -> Value:
        if expr in scope:
            return scope[expr]
        for index, param in enumerate(func.params):
            if param.same_as(expr):
                shape = tensor_shape(param, f"argument {index}")
                tensor = model.new_tensor(shape)
                model.inputs.append(ModelIO(tensor.operand, index, shape, layout_of(len(shape))))
                scope[param] = tensor
                return tensor
        raise HarnessBug(f"{func.attrs['global_symbol']}: unbound value {expr}")

    local_funcs: dict[Any, Any] = {}
    bindings, result = _bindings(func)
    for binding in bindings:
        value = binding.value
        if isinstance(value, relax.Function):
            local_funcs[binding.var] = value
            continue
        if isinstance(value, relax.Call) and value.op in local_funcs:
            composite = local_funcs[value.op]
            args = [lookup_outer(a) for a in value.args]
            inner = dict(zip(composite.params, args, strict=True))
            inner_bindings, inner_result = _bindings(composite)
            pairs = [(b.var, b.value) for b in inner_bindings]

            def lookup_inner(expr: Any, inner: dict[Any, Value] = inner) -> Value:
                if expr in inner:
                    return inner[expr]
                raise HarnessBug(f"composite argument {expr} is not a parameter")

            values = translate_bindings(model, pairs, lookup_inner, {inner_result})
            scope[binding.var] = values[inner_result]
            continue
        if isinstance(value, relax.Call):
            # MergeCompositeFunctions leaves only composite calls; a bare op is still fine.
            values = translate_bindings(model, [(binding.var, value)], lookup_outer, {binding.var})
            scope[binding.var] = values[binding.var]
            continue
        if isinstance(value, relax.Var):  # an alias (``gv = lv``)
            scope[binding.var] = lookup_outer(value)
            continue
        raise HarnessBug(f"unexpected binding in an offloaded function: {type(value).__name__}")

    results = list(result.fields) if isinstance(result, relax.Tuple) else [result]
    input_operands = {io.operand for io in model.inputs}
    for index, expr in enumerate(results):
        value = lookup_outer(expr)
        if not isinstance(value, Tensor) or value.operand in input_operands:
            raise HarnessBug("an offloaded function returns a constant or its own input")
        model.outputs.append(
            ModelIO(value.operand, index, value.shape, layout_of(len(value.shape)))
        )
    return model


# ------------------------------------------------------------------------------------------
# NNModel -> C
# ------------------------------------------------------------------------------------------

_HELPERS = r"""
#ifndef EDGEFARM_BYOC_HELPERS_
#define EDGEFARM_BYOC_HELPERS_
/* Shared by every generated subgraph (guarded: several may land in one translation unit). */

static int ef_fail(const char* message) {
  TVMFFIErrorSetRaisedFromCStr("RuntimeError", message);
  return -1;
}

/* A tensor argument: a DLTensor pointer, or a Tensor object (DLTensor after its header). */
static DLTensor* ef_arg_tensor(const TVMFFIAny* arg) {
  if (arg->type_index == kTVMFFIDLTensorPtr) return (DLTensor*)arg->v_ptr;
  if (arg->type_index == kTVMFFITensor)
    return (DLTensor*)((char*)arg->v_obj + sizeof(TVMFFIObject));
  return NULL;
}

/* Checks a float32, compact, CPU tensor of the expected shape; returns its first byte. */
static float* ef_arg_data(const TVMFFIAny* arg, int ndim, const int64_t* shape, const char* sym,
                          int index, char* err, size_t err_size) {
  DLTensor* t = ef_arg_tensor(arg);
  if (!t) {
    snprintf(err, err_size, "%s: argument %d is not a tensor", sym, index);
    return NULL;
  }
  if (t->device.device_type != kDLCPU || t->dtype.code != kDLFloat || t->dtype.bits != 32 ||
      t->dtype.lanes != 1 || t->ndim != ndim) {
    snprintf(err, err_size, "%s: argument %d must be a float32 CPU tensor of rank %d", sym,
             index, ndim);
    return NULL;
  }
  int64_t expect = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (t->shape[d] != shape[d]) {
      snprintf(err, err_size, "%s: argument %d has dim %d = %lld, expected %lld", sym, index, d,
               (long long)t->shape[d], (long long)shape[d]);
      return NULL;
    }
    if (t->strides && shape[d] != 1 && t->strides[d] != expect) {
      snprintf(err, err_size, "%s: argument %d is not compact", sym, index);
      return NULL;
    }
    expect *= shape[d];
  }
  return (float*)((char*)t->data + t->byte_offset);
}

/* dst dim d is src dim perm[d] (row-major, rank <= 6). */
static void ef_permute(const float* src, float* dst, int rank, const int64_t* src_dims,
                       const int* perm) {
  int64_t src_strides[6], dst_dims[6], n = 1;
  for (int d = rank - 1; d >= 0; --d) {
    src_strides[d] = n;
    n *= src_dims[d];
  }
  for (int d = 0; d < rank; ++d) dst_dims[d] = src_dims[perm[d]];
  for (int64_t k = 0; k < n; ++k) {
    int64_t rem = k, at = 0;
    for (int d = rank - 1; d >= 0; --d) {
      at += (rem % dst_dims[d]) * src_strides[perm[d]];
      rem /= dst_dims[d];
    }
    dst[k] = src[at];
  }
}

/* FNV-1a over a tensor's bytes: tells whether weights passed again are the ones a model was
 * built with. */
static uint64_t ef_checksum(const float* data, size_t count) {
  const unsigned char* p = (const unsigned char*)data;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < count * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}
#endif /* EDGEFARM_BYOC_HELPERS_ */
"""


# The APIs' result codes by value (NeuralNetworksTypes.h ResultCode, NeuronAdapter.h).
RESULT_NAMES = {
    "nnapi": (
        "NO_ERROR",
        "OUT_OF_MEMORY",
        "INCOMPLETE",
        "UNEXPECTED_NULL",
        "BAD_DATA",
        "OP_FAILED",
        "BAD_STATE",
        "UNMAPPABLE",
        "OUTPUT_INSUFFICIENT_SIZE",
        "UNAVAILABLE_DEVICE",
    ),
    "neuron": (
        "NO_ERROR",
        "OUT_OF_MEMORY",
        "INCOMPLETE",
        "UNEXPECTED_NULL",
        "BAD_DATA",
        "OP_FAILED",
        "UNMAPPABLE",
        "BAD_STATE",
        "BAD_VERSION",
    ),
}


def _result_names(d: Dialect) -> str:
    """A C function naming the dialect's result codes, so that a failed call says which."""
    names = ", ".join(f'"{d.const(n)}"' for n in RESULT_NAMES[d.name])
    n = len(RESULT_NAMES[d.name])
    return (
        f"#ifndef EF_{d.name.upper()}_RESULT_NAMES_\n#define EF_{d.name.upper()}_RESULT_NAMES_\n"
        f"static const char* ef_{d.name}_result(int rc) {{\n"
        f"  static const char* const names[] = {{{names}}};\n"
        f'  return rc >= 0 && rc < {n} ? names[rc] : "an unknown result code";\n}}\n#endif'
    )


def _c_list(values: Sequence[int | float]) -> str:
    return ", ".join(str(v) for v in values) if values else "0"


def _c_float(value: float) -> str:
    """A finite float32 as a C literal that reads back as exactly that float32."""
    import numpy as np

    f32 = np.float32(value)
    if not np.isfinite(f32):
        raise HarnessBug(f"a non-finite constant ({value}) in an NN model")
    return f"{float(f32)!r}f"


def _count(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def emit_c(
    model: NNModel,
    dialect: Dialect,
    symbol: str,
    arg_shapes: Sequence[tuple[int, ...]],
    result_shapes: Sequence[tuple[int, ...]],
    preference: str,
) -> str:
    """The C source of one offloaded subgraph."""
    d = dialect
    model_t, comp_t, exec_t = (
        f"{d.type_prefix}Model",
        f"{d.type_prefix}Compilation",
        f"{d.type_prefix}Execution",
    )
    operand_t = f"{d.type_prefix}OperandType"
    ok = d.const("NO_ERROR")
    codes = f"ef_{d.name}_result"
    s = symbol
    n_args = len(arg_shapes) + len(result_shapes)
    all_shapes = list(arg_shapes) + list(result_shapes)
    consts = [op for op in model.operands if op.kind in ("const", "zeros")]
    lines: list[str] = []
    w = lines.append

    w(f"/* Generated by edgefarm (harness.byoc.codegen): subgraph {s}, {d.label} dialect, */")
    w(f"/* {len(model.operations)} operations, {len(model.operands)} operands. */")
    w("#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>")
    w("#include <pthread.h>\n#include <dlpack/dlpack.h>\n#include <tvm/ffi/c_api.h>")
    # A phone build compiles against the vendor's own header; the host build against the
    # reference driver's edgefarm_nn.h, which declares the same documented names.
    vendor = "<android/NeuralNetworks.h>" if d.name == "nnapi" else '"NeuronAdapter.h"'
    w(f'#if defined(__ANDROID__)\n#include {vendor}\n#else\n#include "edgefarm_nn.h"\n#endif')
    w('#ifdef __cplusplus\nextern "C" {\n#endif')
    w(_HELPERS)
    w(_result_names(d))
    w(f"static pthread_mutex_t ef_lock_{s} = PTHREAD_MUTEX_INITIALIZER;")
    w(f"static int ef_ready_{s} = 0;")
    w(f"static {model_t}* ef_model_{s} = NULL;")
    w(f"static {comp_t}* ef_compilation_{s} = NULL;")
    w(f"static float* ef_consts_{s}[{max(len(consts), 1)}];")
    weights = sorted(model.const_params)
    w(f"static const float* ef_weights_{s}[{max(len(weights), 1)}];")
    w(f"static uint64_t ef_weight_sums_{s}[{max(len(weights), 1)}];")
    w(f"static float* ef_in_{s}[{max(len(model.inputs), 1)}];")
    w(f"static float* ef_out_{s}[{max(len(model.outputs), 1)}];")
    for i, shape in enumerate(all_shapes):
        w(f"static const int64_t ef_shape_{s}_{i}[] = {{{_c_list(shape)}}};")
    w("")

    # -- build ------------------------------------------------------------------------------
    w(f"static int ef_build_{s}(float* const* args, char* err, size_t err_size) {{")
    w("  int rc;")
    w(f"  {model_t}* model = NULL;")
    w(f"  {comp_t}* compilation = NULL;")
    w(f"#define EF_CALL(what, expr) do {{ rc = (expr); if (rc != {ok}) {{ \\")
    w(
        f'    snprintf(err, err_size, "{s}: %s failed with %s (%d)", what, {codes}(rc), rc); '
        "goto fail; } } while (0)"
    )
    w(f'  EF_CALL("{d.fn("Model_create")}", {d.fn("Model_create")}(&model));')
    const_slot = 0
    value_lines: list[str] = []
    for index, op in enumerate(model.operands):
        if op.kind in ("tensor", "const", "zeros", "f32vec"):
            type_code, dims = d.const("TENSOR_FLOAT32"), op.dims
        elif op.kind == "i32vec":
            type_code, dims = d.const("TENSOR_INT32"), (len(op.value),)
        else:
            type_code = d.const({"i32": "INT32", "f32": "FLOAT32", "bool": "BOOL"}[op.kind])
            dims = ()
        w("  {")
        if dims:
            w(f"    static const uint32_t dims[] = {{{_c_list(dims)}}};")
            w(f"    {operand_t} t = {{{type_code}, {len(dims)}, dims, 0.0f, 0}};")
        else:
            w(f"    {operand_t} t = {{{type_code}, 0, NULL, 0.0f, 0}};")
        w(f'    EF_CALL("{d.fn("Model_addOperand")}", {d.fn("Model_addOperand")}(model, &t));')
        w("  }")
        set_value = d.fn("Model_setOperandValue")
        if op.kind == "i32":
            value_lines.append(
                f"  {{ static const int32_t v = {op.value}; "
                f'EF_CALL("{set_value}", {set_value}(model, {index}, &v, sizeof(v))); }}'
            )
        elif op.kind == "f32":
            value_lines.append(
                f"  {{ static const float v = {float(op.value)!r}f; "
                f'EF_CALL("{set_value}", {set_value}(model, {index}, &v, sizeof(v))); }}'
            )
        elif op.kind == "bool":
            value_lines.append(
                f"  {{ static const uint8_t v = {1 if op.value else 0}; "
                f'EF_CALL("{set_value}", {set_value}(model, {index}, &v, sizeof(v))); }}'
            )
        elif op.kind == "i32vec":
            value_lines.append(
                f"  {{ static const int32_t v[] = {{{_c_list(op.value)}}}; "
                f'EF_CALL("{set_value}", {set_value}(model, {index}, v, sizeof(v))); }}'
            )
        elif op.kind == "f32vec":
            floats = ", ".join(_c_float(v) for v in op.value)
            value_lines.append(
                f"  {{ static const float v[] = {{{floats}}}; "
                f'EF_CALL("{set_value}", {set_value}(model, {index}, v, sizeof(v))); }}'
            )
        elif op.kind in ("const", "zeros"):
            n = _count(op.dims)
            slot = const_slot
            const_slot += 1
            block = [
                "  {",
                f"    float* buf = (float*)calloc({n}, sizeof(float));",
                f'    if (!buf) {{ snprintf(err, err_size, "{s}: out of memory"); goto fail; }}',
                # Kept for the life of the process: the APIs may keep the pointer.
                f"    ef_consts_{s}[{slot}] = buf;",
            ]
            if op.kind == "const":
                if tuple(range(len(op.src_shape))) == op.perm:
                    block.append(f"    memcpy(buf, args[{op.param}], {n} * sizeof(float));")
                else:
                    block += [
                        f"    static const int64_t src_dims[] = {{{_c_list(op.src_shape)}}};",
                        f"    static const int perm[] = {{{_c_list(op.perm)}}};",
                        f"    ef_permute(args[{op.param}], buf, {len(op.perm)}, src_dims, perm);",
                    ]
            block += [
                f'    EF_CALL("{set_value}", {set_value}(model, {index}, buf, '
                f"{n} * sizeof(float)));",
                "  }",
            ]
            value_lines.extend(block)
    lines.extend(value_lines)
    add_op = d.fn("Model_addOperation")
    for operation in model.operations:
        w("  {")
        w(f"    static const uint32_t in[] = {{{_c_list(operation.inputs)}}};")
        w(f"    static const uint32_t out[] = {{{_c_list(operation.outputs)}}};")
        w(
            f'    EF_CALL("{add_op}({operation.code})", {add_op}(model, '
            f"{d.const(operation.code)}, {len(operation.inputs)}, in, "
            f"{len(operation.outputs)}, out));"
        )
        w("  }")
    ident = d.fn("Model_identifyInputsAndOutputs")
    w("  {")
    w(f"    static const uint32_t in[] = {{{_c_list([io.operand for io in model.inputs])}}};")
    w(f"    static const uint32_t out[] = {{{_c_list([io.operand for io in model.outputs])}}};")
    w(
        f'    EF_CALL("{ident}", {ident}(model, {len(model.inputs)}, in, '
        f"{len(model.outputs)}, out));"
    )
    w("  }")
    w(f'  EF_CALL("{d.fn("Model_finish")}", {d.fn("Model_finish")}(model));')
    w(
        f'  EF_CALL("{d.fn("Compilation_create")}", '
        f"{d.fn('Compilation_create')}(model, &compilation));"
    )
    w(
        f'  EF_CALL("{d.fn("Compilation_setPreference")}", '
        f"{d.fn('Compilation_setPreference')}(compilation, {d.preference(preference)}));"
    )
    w(f'  EF_CALL("{d.fn("Compilation_finish")}", {d.fn("Compilation_finish")}(compilation));')
    for k, io in enumerate(model.inputs):
        if io.perm != tuple(range(len(io.shape))):
            w(f"  ef_in_{s}[{k}] = (float*)malloc({_count(io.shape)} * sizeof(float));")
            w(f'  if (!ef_in_{s}[{k}]) {{ snprintf(err, err_size, "out of memory"); goto fail; }}')
    for k, io in enumerate(model.outputs):
        if io.perm != tuple(range(len(io.shape))):
            w(f"  ef_out_{s}[{k}] = (float*)malloc({_count(io.shape)} * sizeof(float));")
            w(f'  if (!ef_out_{s}[{k}]) {{ snprintf(err, err_size, "out of memory"); goto fail; }}')
    for j, param in enumerate(weights):
        w(f"  ef_weights_{s}[{j}] = args[{param}];")
        w(f"  ef_weight_sums_{s}[{j}] = ef_checksum(args[{param}], {_count(all_shapes[param])});")
    w(f"  ef_model_{s} = model;")
    w(f"  ef_compilation_{s} = compilation;")
    w("  return 0;")
    w("fail:")
    w(f"  if (compilation) {d.fn('Compilation_free')}(compilation);")
    w(f"  if (model) {d.fn('Model_free')}(model);")
    w("  return -1;")
    w("#undef EF_CALL")
    w("}")
    w("")

    # -- run --------------------------------------------------------------------------------
    w(f"static int ef_run_{s}(float* const* args, char* err, size_t err_size) {{")
    w("  int rc;")
    w(f"  {exec_t}* execution = NULL;")
    w(f"#define EF_CALL(what, expr) do {{ rc = (expr); if (rc != {ok}) {{ \\")
    w(
        f'    snprintf(err, err_size, "{s}: %s failed with %s (%d)", what, {codes}(rc), rc); '
        "goto fail; } } while (0)"
    )
    w(
        f'  EF_CALL("{d.fn("Execution_create")}", '
        f"{d.fn('Execution_create')}(ef_compilation_{s}, &execution));"
    )
    n_params = len(arg_shapes)
    for k, io in enumerate(model.inputs):
        nbytes = f"{_count(io.shape)} * sizeof(float)"
        if io.perm != tuple(range(len(io.shape))):
            w("  {")
            w(f"    static const int64_t dims[] = {{{_c_list(io.shape)}}};")
            w(f"    static const int perm[] = {{{_c_list(io.perm)}}};")
            w(f"    ef_permute(args[{io.index}], ef_in_{s}[{k}], {len(io.shape)}, dims, perm);")
            w("  }")
            buf = f"ef_in_{s}[{k}]"
        else:
            buf = f"args[{io.index}]"
        w(
            f'  EF_CALL("{d.fn("Execution_setInput")}", '
            f"{d.fn('Execution_setInput')}(execution, {k}, NULL, {buf}, {nbytes}));"
        )
    for k, io in enumerate(model.outputs):
        nbytes = f"{_count(io.shape)} * sizeof(float)"
        plain = io.perm == tuple(range(len(io.shape)))
        buf = f"args[{n_params + io.index}]" if plain else f"ef_out_{s}[{k}]"
        w(
            f'  EF_CALL("{d.fn("Execution_setOutput")}", '
            f"{d.fn('Execution_setOutput')}(execution, {k}, NULL, {buf}, {nbytes}));"
        )
    if d.name == "nnapi":
        w("  {")
        w("    ANeuralNetworksEvent* event = NULL;")
        w(
            '    EF_CALL("ANeuralNetworksExecution_startCompute", '
            "ANeuralNetworksExecution_startCompute(execution, &event));"
        )
        w("    rc = ANeuralNetworksEvent_wait(event);")
        w("    ANeuralNetworksEvent_free(event);")
        w("    if (rc != ANEURALNETWORKS_NO_ERROR) {")
        w(f'      snprintf(err, err_size, "{s}: ANeuralNetworksEvent_wait failed: %d", rc);')
        w("      goto fail;")
        w("    }")
        w("  }")
    else:
        w('  EF_CALL("NeuronExecution_compute", NeuronExecution_compute(execution));')
    for k, io in enumerate(model.outputs):
        if io.perm != tuple(range(len(io.shape))):
            nn_dims = permuted(io.shape, io.perm)
            back = [0] * len(io.perm)
            for i, p in enumerate(io.perm):
                back[p] = i
            w("  {")
            w(f"    static const int64_t dims[] = {{{_c_list(nn_dims)}}};")
            w(f"    static const int perm[] = {{{_c_list(back)}}};")
            w(
                f"    ef_permute(ef_out_{s}[{k}], args[{n_params + io.index}], "
                f"{len(io.shape)}, dims, perm);"
            )
            w("  }")
    w(f"  {d.fn('Execution_free')}(execution);")
    w("  return 0;")
    w("fail:")
    w(f"  if (execution) {d.fn('Execution_free')}(execution);")
    w("  return -1;")
    w("#undef EF_CALL")
    w("}")
    w("")

    # -- weights ----------------------------------------------------------------------------
    # The model holds the weights of its first call. Another call must pass the same: a
    # function shared by two call sites would run the second with the first's weights. The
    # first call's buffers (the VM's constants, alive as long as the module) are the fast
    # path; any other buffer is checksummed on every call, never remembered: a freed buffer's
    # address may come back holding other weights.
    w(f"static int ef_same_weights_{s}(float* const* args, char* err, size_t err_size) {{")
    for j, param in enumerate(weights):
        w(f"  if (args[{param}] != ef_weights_{s}[{j}]) {{")
        w(
            f"    if (ef_checksum(args[{param}], {_count(all_shapes[param])}) != "
            f"ef_weight_sums_{s}[{j}]) {{"
        )
        w(
            f'      snprintf(err, err_size, "{s}: argument {param} holds other weights than '
            'its accelerator model was built with");'
        )
        w("      return -1;")
        w("    }")
        w("  }")
    w("  (void)args;")
    w("  (void)err;")
    w("  (void)err_size;")
    w("  return 0;")
    w("}")
    w("")

    # -- entry ------------------------------------------------------------------------------
    w('#if defined(__GNUC__)\n__attribute__((visibility("default")))\n#endif')
    w(
        f"int __tvm_ffi_{s}(void* self, const TVMFFIAny* args, int32_t num_args, "
        "TVMFFIAny* result) {"
    )
    w(f"  float* data[{n_args}];")
    w("  char err[512];")
    w("  int rc;")
    w("  (void)self;")
    w("  (void)result;")
    w(f"  if (num_args != {n_args}) {{")
    w(f'    snprintf(err, sizeof(err), "{s}: expected {n_args} arguments, got %d", (int)num_args);')
    w("    return ef_fail(err);")
    w("  }")
    for i, shape in enumerate(all_shapes):
        w(
            f'  data[{i}] = ef_arg_data(&args[{i}], {len(shape)}, ef_shape_{s}_{i}, "{s}", {i}, '
            "err, sizeof(err));"
        )
        w(f"  if (!data[{i}]) return ef_fail(err);")
    w(f"  pthread_mutex_lock(&ef_lock_{s});")
    w(
        f"  rc = ef_ready_{s} ? ef_same_weights_{s}(data, err, sizeof(err)) "
        f": ef_build_{s}(data, err, sizeof(err));"
    )
    w(f"  if (rc == 0) {{ ef_ready_{s} = 1; rc = ef_run_{s}(data, err, sizeof(err)); }}")
    w(f"  pthread_mutex_unlock(&ef_lock_{s});")
    w("  return rc == 0 ? 0 : ef_fail(err);")
    w("}")
    w("#ifdef __cplusplus\n}\n#endif")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Registration
# ------------------------------------------------------------------------------------------


def _option(options: Any, key: str, default: Any) -> Any:
    if options is None:
        return default
    try:
        value = options.get(key, None)
    except AttributeError:
        return default
    return default if value is None else value


def generate(funcs: Sequence[Any], options: Any, dialect: Dialect) -> list[Any]:
    """The C source modules of ``funcs`` (what ``relax.ext.<dialect>`` returns)."""
    import tvm

    create = tvm.get_global_func("runtime.CSourceModuleCreate")
    level = int(_option(options, "feature_level", DEFAULT_FEATURE_LEVEL))
    preference = str(_option(options, "preference", "fast_single_answer"))
    modules = []
    for func in funcs:
        symbol = str(func.attrs["global_symbol"])
        try:
            model = build_model(func, dialect, level)
        except Refused as exc:
            # The partitioner ran the same translation before offloading: this is our defect.
            raise HarnessBug(
                f"{symbol}: the codegen refused what the partitioner offloaded: "
                f"{exc.reason}: {exc.detail}"
            ) from None
        arg_shapes = [tensor_shape(p, f"argument {i}") for i, p in enumerate(func.params)]
        ret = func.ret_ty
        from tvm import relax

        fields = ret.fields if isinstance(ret, relax.TupleType) else [ret]
        result_shapes = [tuple(int(x) for x in f.shape.values) for f in fields]
        code = emit_c(model, dialect, symbol, arg_shapes, result_shapes, preference)
        log.debug("%s: %d operations, %d bytes of C", symbol, len(model.operations), len(code))
        modules.append(create(code, "c", [symbol], []))
    return modules


def register_codegens() -> None:
    """Register ``relax.ext.nnapi`` and ``relax.ext.neuron`` with TVM. Idempotent."""
    import tvm

    for dialect in DIALECTS.values():

        def codegen(
            funcs: Any, options: Any = None, constant_names: Any = None, d: Dialect = dialect
        ) -> list[Any]:
            del constant_names  # constants arrive as arguments (bind_constants=False)
            return generate(list(funcs), options, d)

        tvm.register_global_func(f"relax.ext.{dialect.name}", codegen, override=True)
