/* The host reference driver's model, compilation and execution (see ef_core.h). */
#include "ef_core.h"

#include "ef_conform.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int32_t type;
  ef_shape shape;
  void* value; /* constant data (a private copy), or NULL */
  size_t value_length;
  int model_input;  /* index into the model's inputs, or -1 */
  int model_output; /* index into the model's outputs, or -1 */
} ef_operand;

typedef struct {
  int32_t code;
  uint32_t n_in, n_out;
  uint32_t* in;
  uint32_t* out;
} ef_operation;

struct ef_model {
  ef_operand* operands;
  uint32_t n_operands, cap_operands;
  ef_operation* operations;
  uint32_t n_operations, cap_operations;
  uint32_t* inputs;
  uint32_t n_inputs;
  uint32_t* outputs;
  uint32_t n_outputs;
  int identified;
  int finished;
  ef_api api; /* the API the model was created through: whose rules it follows */
};

struct ef_compilation {
  ef_model* model;
  int32_t preference;
  int finished;
  uint32_t* order;  /* operations in an order that respects their data dependencies */
  float** scratch;  /* per operand: storage of intermediate tensors, else NULL */
};

struct ef_execution {
  ef_compilation* compilation;
  const void** inputs;
  size_t* input_lengths;
  void** outputs;
  size_t* output_lengths;
};

static __thread char g_error[512];

#define TRY(expr)                 \
  do {                            \
    ef_status s_ = (expr);        \
    if (s_ != EF_OK) return s_;   \
  } while (0)

const char* ef_last_error(void) { return g_error; }

static ef_status fail(ef_status status, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(g_error, sizeof(g_error), fmt, args);
  va_end(args);
  if (getenv("EDGEFARM_NN_VERBOSE")) fprintf(stderr, "edgefarm-nn: %s\n", g_error);
  return status;
}

/* An operation's name for messages (its code when the rules table does not know it). */
static const char* op_name(int32_t code) {
  static __thread char unknown[32];
  const char* name = ef_operation_name(code);
  if (name) return name;
  snprintf(unknown, sizeof(unknown), "operation %d", code);
  return unknown;
}

static int is_tensor_type(int32_t type) {
  return type == EF_TENSOR_FLOAT32 || type == EF_TENSOR_INT32;
}

static size_t type_size(int32_t type) { return type == EF_BOOL ? 1 : 4; }

/* ------------------------------------------------------------------------------------------ */
/* Model                                                                                      */
/* ------------------------------------------------------------------------------------------ */

ef_status ef_model_create(ef_model** model, int api) {
  if (!model) return fail(EF_ERR_NULL, "model_create: null output pointer");
  *model = (ef_model*)calloc(1, sizeof(ef_model));
  if (!*model) return fail(EF_ERR_NOMEM, "model_create: out of memory");
  (*model)->api = api == EF_API_NEURON ? EF_API_NEURON : EF_API_NNAPI;
  return EF_OK;
}

void ef_model_free(ef_model* model) {
  if (!model) return;
  for (uint32_t i = 0; i < model->n_operands; ++i) free(model->operands[i].value);
  for (uint32_t i = 0; i < model->n_operations; ++i) {
    free(model->operations[i].in);
    free(model->operations[i].out);
  }
  free(model->operands);
  free(model->operations);
  free(model->inputs);
  free(model->outputs);
  free(model);
}

ef_status ef_model_add_operand(ef_model* model, int32_t type, uint32_t rank,
                               const uint32_t* dims) {
  if (!model) return fail(EF_ERR_NULL, "addOperand: null model");
  if (model->finished) return fail(EF_ERR_BAD_STATE, "addOperand: model already finished");
  if (rank > EF_MAX_RANK) return fail(EF_ERR_BAD_DATA, "addOperand: rank %u > %d", rank, EF_MAX_RANK);
  if (type != EF_FLOAT32 && type != EF_INT32 && type != EF_UINT32 && type != EF_BOOL &&
      !is_tensor_type(type))
    return fail(EF_ERR_BAD_DATA, "addOperand: operand type %d is not supported by this driver", type);
  if (!is_tensor_type(type) && rank != 0)
    return fail(EF_ERR_BAD_DATA, "addOperand: a scalar has rank 0");
  if (model->n_operands == model->cap_operands) {
    uint32_t cap = model->cap_operands ? model->cap_operands * 2 : 32;
    ef_operand* grown = (ef_operand*)realloc(model->operands, cap * sizeof(ef_operand));
    if (!grown) return fail(EF_ERR_NOMEM, "addOperand: out of memory");
    model->operands = grown;
    model->cap_operands = cap;
  }
  ef_operand* op = &model->operands[model->n_operands++];
  memset(op, 0, sizeof(*op));
  op->type = type;
  op->shape.rank = rank;
  for (uint32_t i = 0; i < rank; ++i) {
    if (!dims || dims[i] == 0)
      return fail(EF_ERR_BAD_DATA, "addOperand: this driver needs fully specified shapes");
    op->shape.dims[i] = dims[i];
  }
  op->model_input = -1;
  op->model_output = -1;
  return EF_OK;
}

static size_t operand_bytes(const ef_operand* op) {
  return (is_tensor_type(op->type) ? ef_shape_count(&op->shape) : 1) * type_size(op->type);
}

ef_status ef_model_set_value(ef_model* model, int32_t index, const void* buffer, size_t length) {
  if (!model || !buffer) return fail(EF_ERR_NULL, "setOperandValue: null argument");
  if (model->finished) return fail(EF_ERR_BAD_STATE, "setOperandValue: model already finished");
  if (index < 0 || (uint32_t)index >= model->n_operands)
    return fail(EF_ERR_BAD_DATA, "setOperandValue: no operand %d", index);
  ef_operand* op = &model->operands[index];
  if (length != operand_bytes(op))
    return fail(EF_ERR_BAD_DATA, "setOperandValue: operand %d needs %zu bytes, got %zu", index,
                operand_bytes(op), length);
  /* The APIs keep a pointer to values above 128 bytes; a private copy is equally valid. */
  free(op->value);
  op->value = malloc(length);
  if (!op->value) return fail(EF_ERR_NOMEM, "setOperandValue: out of memory");
  memcpy(op->value, buffer, length);
  op->value_length = length;
  return EF_OK;
}

static uint32_t* copy_indices(const uint32_t* src, uint32_t n) {
  uint32_t* dst = (uint32_t*)malloc((n ? n : 1) * sizeof(uint32_t));
  if (dst && n) memcpy(dst, src, n * sizeof(uint32_t));
  return dst;
}

/* The APIs' rules (ef_conform.c) on one operation; a violation is BAD_DATA, always logged
 * (as the runtime logs its validation errors to logcat). */
static ef_status conform(const ef_model* model, int32_t code, uint32_t n_in, const uint32_t* in,
                         uint32_t n_out, const uint32_t* out, int check_constants,
                         const char* where) {
  ef_operand_info info_in[256], info_out[8];
  char why[400];
  if (n_in > 256 || n_out > 8)
    return fail(EF_ERR_BAD_DATA, "%s: %u inputs / %u outputs are more than any operation takes",
                where, n_in, n_out);
  for (uint32_t i = 0; i < n_in; ++i) {
    const ef_operand* o = &model->operands[in[i]];
    info_in[i].type = o->type;
    info_in[i].rank = o->shape.rank;
    info_in[i].constant = o->value != NULL;
  }
  for (uint32_t i = 0; i < n_out; ++i) {
    const ef_operand* o = &model->operands[out[i]];
    info_out[i].type = o->type;
    info_out[i].rank = o->shape.rank;
    info_out[i].constant = o->value != NULL;
  }
  if (ef_conform_check(model->api, code, n_in, info_in, n_out, info_out, check_constants, why,
                       sizeof(why)) == 0)
    return EF_OK;
  ef_status s = fail(EF_ERR_BAD_DATA, "%s: %s", where, why);
  if (!getenv("EDGEFARM_NN_VERBOSE")) fprintf(stderr, "edgefarm-nn: %s\n", g_error);
  return s;
}

ef_status ef_model_add_operation(ef_model* model, int32_t code, uint32_t n_in,
                                 const uint32_t* in, uint32_t n_out, const uint32_t* out) {
  if (!model || (n_in && !in) || (n_out && !out))
    return fail(EF_ERR_NULL, "addOperation: null argument");
  if (model->finished) return fail(EF_ERR_BAD_STATE, "addOperation: model already finished");
  for (uint32_t i = 0; i < n_in; ++i)
    if (in[i] >= model->n_operands)
      return fail(EF_ERR_BAD_DATA, "addOperation %d: no operand %u", code, in[i]);
  for (uint32_t i = 0; i < n_out; ++i)
    if (out[i] >= model->n_operands)
      return fail(EF_ERR_BAD_DATA, "addOperation %d: no operand %u", code, out[i]);
  TRY(conform(model, code, n_in, in, n_out, out, 0, "addOperation"));
  if (model->n_operations == model->cap_operations) {
    uint32_t cap = model->cap_operations ? model->cap_operations * 2 : 16;
    ef_operation* grown = (ef_operation*)realloc(model->operations, cap * sizeof(ef_operation));
    if (!grown) return fail(EF_ERR_NOMEM, "addOperation: out of memory");
    model->operations = grown;
    model->cap_operations = cap;
  }
  ef_operation* op = &model->operations[model->n_operations];
  op->code = code;
  op->n_in = n_in;
  op->n_out = n_out;
  op->in = copy_indices(in, n_in);
  op->out = copy_indices(out, n_out);
  if (!op->in || !op->out) return fail(EF_ERR_NOMEM, "addOperation: out of memory");
  model->n_operations++;
  return EF_OK;
}

ef_status ef_model_identify(ef_model* model, uint32_t n_in, const uint32_t* in, uint32_t n_out,
                            const uint32_t* out) {
  if (!model || (n_in && !in) || (n_out && !out))
    return fail(EF_ERR_NULL, "identifyInputsAndOutputs: null argument");
  if (model->finished)
    return fail(EF_ERR_BAD_STATE, "identifyInputsAndOutputs: model already finished");
  for (uint32_t i = 0; i < n_in; ++i) {
    if (in[i] >= model->n_operands) return fail(EF_ERR_BAD_DATA, "inputs: no operand %u", in[i]);
    model->operands[in[i]].model_input = (int)i;
  }
  for (uint32_t i = 0; i < n_out; ++i) {
    if (out[i] >= model->n_operands) return fail(EF_ERR_BAD_DATA, "outputs: no operand %u", out[i]);
    if (model->operands[out[i]].model_input >= 0)
      return fail(EF_ERR_BAD_DATA, "operand %u is both an input and an output", out[i]);
    model->operands[out[i]].model_output = (int)i;
  }
  free(model->inputs);
  free(model->outputs);
  model->inputs = copy_indices(in, n_in);
  model->outputs = copy_indices(out, n_out);
  if (!model->inputs || !model->outputs) return fail(EF_ERR_NOMEM, "identify: out of memory");
  model->n_inputs = n_in;
  model->n_outputs = n_out;
  model->identified = 1;
  return EF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Operation checks: operand counts, types, constant parameters and shapes                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
  const ef_model* m;
  const ef_operation* op;
} ef_ctx;

static const ef_operand* arg(const ef_ctx* c, uint32_t i) { return &c->m->operands[c->op->in[i]]; }
static const ef_operand* res(const ef_ctx* c, uint32_t i) { return &c->m->operands[c->op->out[i]]; }

static ef_status need_float_tensor(const ef_ctx* c, const ef_operand* o, const char* what) {
  if (o->type != EF_TENSOR_FLOAT32)
    return fail(EF_ERR_BAD_DATA, "%s: %s must be TENSOR_FLOAT32 (type %d)", op_name(c->op->code),
                what, o->type);
  return EF_OK;
}

static ef_status const_i32(const ef_ctx* c, uint32_t i, int32_t* v) {
  const ef_operand* o = arg(c, i);
  if (o->type != EF_INT32 || !o->value)
    return fail(EF_ERR_BAD_DATA, "%s: input %u must be a constant INT32", op_name(c->op->code), i);
  *v = *(const int32_t*)o->value;
  return EF_OK;
}

static ef_status const_bool(const ef_ctx* c, uint32_t i, int* v) {
  const ef_operand* o = arg(c, i);
  if (o->type != EF_BOOL || !o->value)
    return fail(EF_ERR_BAD_DATA, "%s: input %u must be a constant BOOL", op_name(c->op->code), i);
  *v = *(const uint8_t*)o->value != 0;
  return EF_OK;
}

static ef_status const_f32(const ef_ctx* c, uint32_t i, float* v) {
  const ef_operand* o = arg(c, i);
  if (o->type != EF_FLOAT32 || !o->value)
    return fail(EF_ERR_BAD_DATA, "%s: input %u must be a constant FLOAT32", op_name(c->op->code), i);
  *v = *(const float*)o->value;
  return EF_OK;
}

static ef_status const_i32_tensor(const ef_ctx* c, uint32_t i, const int32_t** v, uint32_t* n) {
  const ef_operand* o = arg(c, i);
  if (o->type != EF_TENSOR_INT32 || o->shape.rank != 1 || !o->value)
    return fail(EF_ERR_BAD_DATA, "%s: input %u must be a constant 1-D TENSOR_INT32", op_name(c->op->code), i);
  *v = (const int32_t*)o->value;
  *n = o->shape.dims[0];
  return EF_OK;
}

static ef_status same_shape(const ef_ctx* c, const ef_shape* want) {
  const ef_shape* got = &res(c, 0)->shape;
  int ok = got->rank == want->rank;
  for (uint32_t i = 0; ok && i < want->rank; ++i) ok = got->dims[i] == want->dims[i];
  if (!ok) {
    char w[96] = "", g[96] = "";
    for (uint32_t i = 0; i < want->rank; ++i)
      snprintf(w + strlen(w), sizeof(w) - strlen(w), "%s%u", i ? "," : "", want->dims[i]);
    for (uint32_t i = 0; i < got->rank; ++i)
      snprintf(g + strlen(g), sizeof(g) - strlen(g), "%s%u", i ? "," : "", got->dims[i]);
    return fail(EF_ERR_BAD_DATA, "%s: output shape [%s] should be [%s]", op_name(c->op->code), g, w);
  }
  return EF_OK;
}

static ef_status need_counts(const ef_ctx* c, uint32_t n_in_a, uint32_t n_in_b, uint32_t n_out) {
  if ((c->op->n_in != n_in_a && c->op->n_in != n_in_b) || c->op->n_out != n_out)
    return fail(EF_ERR_BAD_DATA, "%s: %u inputs/%u outputs is not a supported form", op_name(c->op->code), c->op->n_in, c->op->n_out);
  return EF_OK;
}

static ef_status check_act(const ef_ctx* c, uint32_t i) {
  int32_t act = 0;
  TRY(const_i32(c, i, &act));
  if (act < 0 || act > 3) return fail(EF_ERR_BAD_DATA, "fused activation %d is unknown", act);
  return EF_OK;
}

static ef_status broadcast_shape(const ef_shape* a, const ef_shape* b, ef_shape* out) {
  uint32_t r = a->rank > b->rank ? a->rank : b->rank;
  out->rank = r;
  for (uint32_t i = 0; i < r; ++i) {
    uint32_t da = i < r - a->rank ? 1 : a->dims[i - (r - a->rank)];
    uint32_t db = i < r - b->rank ? 1 : b->dims[i - (r - b->rank)];
    if (da != db && da != 1 && db != 1)
      return fail(EF_ERR_BAD_DATA, "shapes do not broadcast (%u vs %u)", da, db);
    out->dims[i] = da > db ? da : db;
  }
  return EF_OK;
}

static ef_status conv_out(uint32_t in, int32_t pad_a, int32_t pad_b, uint32_t k, int32_t stride,
                          int32_t dil, uint32_t* out) {
  int64_t eff = (int64_t)(k - 1) * dil + 1;
  int64_t span = (int64_t)in + pad_a + pad_b - eff;
  if (stride <= 0 || dil <= 0 || pad_a < 0 || pad_b < 0 || span < 0)
    return fail(EF_ERR_BAD_DATA, "invalid window (input %u, kernel %u, stride %d)", in, k, stride);
  *out = (uint32_t)(span / stride + 1);
  return EF_OK;
}

/* Reads the explicit-padding window parameters starting at input ``first``. */
static ef_status window(const ef_ctx* c, uint32_t first, int32_t pad[4], int32_t stride[2]) {
  for (int i = 0; i < 4; ++i) TRY(const_i32(c, first + i, &pad[i]));
  TRY(const_i32(c, first + 4, &stride[0]));
  TRY(const_i32(c, first + 5, &stride[1]));
  return EF_OK;
}

static ef_status check_layout_nhwc(const ef_ctx* c, uint32_t i) {
  if (c->op->n_in > i) {
    int nchw;
    TRY(const_bool(c, i, &nchw));
    if (nchw) return fail(EF_ERR_BAD_DATA, "%s: this driver runs NHWC only", op_name(c->op->code));
  }
  return EF_OK;
}

static ef_status check_conv(const ef_ctx* c) {
  const int32_t code = c->op->code;
  int32_t pad[4], stride[2], dil[2] = {1, 1}, groups = 1, mult = 1;
  const ef_operand *in = arg(c, 0), *filt = arg(c, 1), *bias = arg(c, 2);
  uint32_t act_at, layout_at, dil_at;
  if (code == EF_CONV_2D) {
    TRY(need_counts(c, 10, 13, 1));
    act_at = 9, layout_at = 10, dil_at = 11;
  } else if (code == EF_DEPTHWISE_CONV_2D) {
    TRY(need_counts(c, 11, 14, 1));
    TRY(const_i32(c, 9, &mult));
    act_at = 10, layout_at = 11, dil_at = 12;
  } else {
    TRY(need_counts(c, 12, 12, 1));
    TRY(const_i32(c, 9, &groups));
    act_at = 10, layout_at = 11, dil_at = 99;
  }
  TRY(need_float_tensor(c, in, "input"));
  TRY(need_float_tensor(c, filt, "filter"));
  TRY(need_float_tensor(c, bias, "bias"));
  if (in->shape.rank != 4 || filt->shape.rank != 4 || bias->shape.rank != 1)
    return fail(EF_ERR_BAD_DATA, "conv: input and filter must be 4-D, bias 1-D");
  TRY(window(c, 3, pad, stride));
  TRY(check_act(c, act_at));
  TRY(check_layout_nhwc(c, layout_at));
  if (c->op->n_in > dil_at + 1) {
    TRY(const_i32(c, dil_at, &dil[0]));
    TRY(const_i32(c, dil_at + 1, &dil[1]));
  }
  uint32_t ci = in->shape.dims[3], co;
  if (code == EF_DEPTHWISE_CONV_2D) {
    co = filt->shape.dims[3];
    if (filt->shape.dims[0] != 1 || co != ci * (uint32_t)mult)
      return fail(EF_ERR_BAD_DATA, "depthwise: filter [1,kh,kw,%u] for %u channels x %d", co, ci, mult);
  } else {
    co = filt->shape.dims[0];
    if (groups <= 0 || ci % groups || co % groups || filt->shape.dims[3] != ci / groups)
      return fail(EF_ERR_BAD_DATA, "conv: filter depth %u does not fit %u channels in %d groups",
                  filt->shape.dims[3], ci, groups);
  }
  if (bias->shape.dims[0] != co) return fail(EF_ERR_BAD_DATA, "conv: bias size %u != %u", bias->shape.dims[0], co);
  ef_shape want = {4, {in->shape.dims[0], 0, 0, co}};
  TRY(conv_out(in->shape.dims[1], pad[2], pad[3], filt->shape.dims[1], stride[1], dil[1], &want.dims[1]));
  TRY(conv_out(in->shape.dims[2], pad[0], pad[1], filt->shape.dims[2], stride[0], dil[0], &want.dims[2]));
  return same_shape(c, &want);
}

static ef_status check_pool(const ef_ctx* c) {
  int32_t pad[4], stride[2], filter[2];
  TRY(need_counts(c, 10, 11, 1));
  const ef_operand* in = arg(c, 0);
  TRY(need_float_tensor(c, in, "input"));
  if (in->shape.rank != 4) return fail(EF_ERR_BAD_DATA, "pool: input must be 4-D");
  TRY(window(c, 1, pad, stride));
  TRY(const_i32(c, 7, &filter[0]));
  TRY(const_i32(c, 8, &filter[1]));
  TRY(check_act(c, 9));
  TRY(check_layout_nhwc(c, 10));
  ef_shape want = {4, {in->shape.dims[0], 0, 0, in->shape.dims[3]}};
  TRY(conv_out(in->shape.dims[1], pad[2], pad[3], (uint32_t)filter[1], stride[1], 1, &want.dims[1]));
  TRY(conv_out(in->shape.dims[2], pad[0], pad[1], (uint32_t)filter[0], stride[0], 1, &want.dims[2]));
  return same_shape(c, &want);
}

static ef_status check_operation(const ef_model* m, const ef_operation* op) {
  ef_ctx cx = {m, op};
  const ef_ctx* c = &cx;
  for (uint32_t i = 0; i < op->n_out; ++i) {
    TRY(need_float_tensor(c, res(c, i), "output"));
    if (res(c, i)->value) return fail(EF_ERR_BAD_DATA, "%s writes a constant", op_name(op->code));
  }
  switch (op->code) {
    case EF_ADD:
    case EF_SUB:
    case EF_MUL:
    case EF_DIV:
    case EF_MAXIMUM:
    case EF_MINIMUM:
    case EF_POW: {
      const int has_act = op->code == EF_ADD || op->code == EF_SUB || op->code == EF_MUL ||
                          op->code == EF_DIV;
      TRY(need_counts(c, has_act ? 3 : 2, has_act ? 3 : 2, 1));
      TRY(need_float_tensor(c, arg(c, 0), "input 0"));
      TRY(need_float_tensor(c, arg(c, 1), "input 1"));
      if (has_act) TRY(check_act(c, 2));
      ef_shape want;
      TRY(broadcast_shape(&arg(c, 0)->shape, &arg(c, 1)->shape, &want));
      return same_shape(c, &want);
    }
    case EF_RELU:
    case EF_RELU1:
    case EF_RELU6:
    case EF_LOGISTIC:
    case EF_TANH:
    case EF_FLOOR:
    case EF_ABS:
    case EF_EXP:
    case EF_LOG:
    case EF_NEG:
    case EF_SQRT:
    case EF_RSQRT:
    case EF_HARD_SWISH:
      TRY(need_counts(c, 1, 1, 1));
      TRY(need_float_tensor(c, arg(c, 0), "input"));
      return same_shape(c, &arg(c, 0)->shape);
    case EF_CONV_2D:
    case EF_DEPTHWISE_CONV_2D:
    case EF_GROUPED_CONV_2D:
      return check_conv(c);
    case EF_AVERAGE_POOL_2D:
    case EF_MAX_POOL_2D:
      return check_pool(c);
    case EF_FULLY_CONNECTED: {
      TRY(need_counts(c, 4, 4, 1));
      const ef_operand *in = arg(c, 0), *w = arg(c, 1), *b = arg(c, 2);
      TRY(need_float_tensor(c, in, "input"));
      TRY(need_float_tensor(c, w, "weights"));
      TRY(need_float_tensor(c, b, "bias"));
      TRY(check_act(c, 3));
      if (w->shape.rank != 2 || b->shape.rank != 1 || b->shape.dims[0] != w->shape.dims[0])
        return fail(EF_ERR_BAD_DATA, "fully connected: weights [units, depth], bias [units]");
      size_t n = ef_shape_count(&in->shape);
      if (n % w->shape.dims[1])
        return fail(EF_ERR_BAD_DATA, "fully connected: input size %zu is not a multiple of %u", n,
                    w->shape.dims[1]);
      ef_shape want = {2, {(uint32_t)(n / w->shape.dims[1]), w->shape.dims[0]}};
      return same_shape(c, &want);
    }
    case EF_SOFTMAX: {
      TRY(need_counts(c, 2, 3, 1));
      float beta;
      TRY(need_float_tensor(c, arg(c, 0), "input"));
      TRY(const_f32(c, 1, &beta));
      if (op->n_in == 3) {
        int32_t axis;
        TRY(const_i32(c, 2, &axis));
        if (axis < -(int32_t)arg(c, 0)->shape.rank || axis >= (int32_t)arg(c, 0)->shape.rank)
          return fail(EF_ERR_BAD_DATA, "softmax: axis %d out of range", axis);
      }
      return same_shape(c, &arg(c, 0)->shape);
    }
    case EF_CONCATENATION: {
      if (op->n_in < 2 || op->n_out != 1) return fail(EF_ERR_BAD_DATA, "concatenation: bad form");
      int32_t axis;
      TRY(const_i32(c, op->n_in - 1, &axis));
      const ef_shape* s0 = &arg(c, 0)->shape;
      if (axis < 0) axis += (int32_t)s0->rank;
      if (axis < 0 || axis >= (int32_t)s0->rank) return fail(EF_ERR_BAD_DATA, "concatenation: bad axis");
      ef_shape want = *s0;
      want.dims[axis] = 0;
      for (uint32_t i = 0; i + 1 < op->n_in; ++i) {
        const ef_shape* s = &arg(c, i)->shape;
        TRY(need_float_tensor(c, arg(c, i), "input"));
        if (s->rank != s0->rank) return fail(EF_ERR_BAD_DATA, "concatenation: ranks differ");
        for (uint32_t d = 0; d < s->rank; ++d)
          if ((int32_t)d != axis && s->dims[d] != s0->dims[d])
            return fail(EF_ERR_BAD_DATA, "concatenation: shapes differ off the axis");
        want.dims[axis] += s->dims[axis];
      }
      return same_shape(c, &want);
    }
    case EF_RESHAPE: {
      TRY(need_counts(c, 2, 2, 1));
      const int32_t* shape;
      uint32_t n;
      TRY(need_float_tensor(c, arg(c, 0), "input"));
      TRY(const_i32_tensor(c, 1, &shape, &n));
      if (n > EF_MAX_RANK) return fail(EF_ERR_BAD_DATA, "reshape: rank too large");
      ef_shape want = {n, {0}};
      size_t known = 1;
      int infer = -1;
      for (uint32_t i = 0; i < n; ++i) {
        if (shape[i] == -1) {
          infer = (int)i;
        } else {
          want.dims[i] = (uint32_t)shape[i];
          known *= (size_t)shape[i];
        }
      }
      if (infer >= 0) want.dims[infer] = (uint32_t)(ef_shape_count(&arg(c, 0)->shape) / known);
      if (ef_shape_count(&want) != ef_shape_count(&arg(c, 0)->shape))
        return fail(EF_ERR_BAD_DATA, "reshape: element counts differ");
      return same_shape(c, &want);
    }
    case EF_TRANSPOSE: {
      TRY(need_counts(c, 2, 2, 1));
      const int32_t* perm;
      uint32_t n;
      const ef_shape* si = &arg(c, 0)->shape;
      TRY(need_float_tensor(c, arg(c, 0), "input"));
      TRY(const_i32_tensor(c, 1, &perm, &n));
      if (n != si->rank) return fail(EF_ERR_BAD_DATA, "transpose: perm size %u != rank %u", n, si->rank);
      ef_shape want = {n, {0}};
      int seen[EF_MAX_RANK] = {0};
      for (uint32_t i = 0; i < n; ++i) {
        if (perm[i] < 0 || perm[i] >= (int32_t)n || seen[perm[i]]++)
          return fail(EF_ERR_BAD_DATA, "transpose: not a permutation");
        want.dims[i] = si->dims[perm[i]];
      }
      return same_shape(c, &want);
    }
    case EF_MEAN: {
      TRY(need_counts(c, 3, 3, 1));
      const int32_t* axes;
      uint32_t n;
      int32_t keep;
      const ef_shape* si = &arg(c, 0)->shape;
      TRY(need_float_tensor(c, arg(c, 0), "input"));
      TRY(const_i32_tensor(c, 1, &axes, &n));
      TRY(const_i32(c, 2, &keep));
      int reduce[EF_MAX_RANK] = {0};
      for (uint32_t i = 0; i < n; ++i) {
        int32_t a = axes[i] < 0 ? axes[i] + (int32_t)si->rank : axes[i];
        if (a < 0 || a >= (int32_t)si->rank) return fail(EF_ERR_BAD_DATA, "mean: bad axis %d", axes[i]);
        reduce[a] = 1;
      }
      ef_shape want = {0, {0}};
      for (uint32_t d = 0; d < si->rank; ++d) {
        if (!reduce[d]) want.dims[want.rank++] = si->dims[d];
        else if (keep) want.dims[want.rank++] = 1;
      }
      if (want.rank == 0) want.dims[want.rank++] = 1;
      return same_shape(c, &want);
    }
    case EF_BATCH_MATMUL: {
      TRY(need_counts(c, 4, 4, 1));
      const ef_shape *sa = &arg(c, 0)->shape, *sb = &arg(c, 1)->shape;
      int adj_a = 0, adj_b = 0;
      TRY(need_float_tensor(c, arg(c, 0), "lhs"));
      TRY(need_float_tensor(c, arg(c, 1), "rhs"));
      TRY(const_bool(c, 2, &adj_a));
      TRY(const_bool(c, 3, &adj_b));
      if (sa->rank != sb->rank || sa->rank < 2 || sa->rank > 4)
        return fail(EF_ERR_BAD_DATA, "batch matmul: ranks must match, 2 to 4");
      uint32_t r = sa->rank;
      for (uint32_t i = 0; i + 2 < r; ++i)
        if (sa->dims[i] != sb->dims[i]) return fail(EF_ERR_BAD_DATA, "batch matmul: batch dims differ");
      uint32_t m = adj_a ? sa->dims[r - 1] : sa->dims[r - 2];
      uint32_t ka = adj_a ? sa->dims[r - 2] : sa->dims[r - 1];
      uint32_t kb = adj_b ? sb->dims[r - 1] : sb->dims[r - 2];
      uint32_t nn = adj_b ? sb->dims[r - 2] : sb->dims[r - 1];
      if (ka != kb) return fail(EF_ERR_BAD_DATA, "batch matmul: inner dims %u != %u", ka, kb);
      ef_shape want = *sa;
      want.dims[r - 2] = m;
      want.dims[r - 1] = nn;
      return same_shape(c, &want);
    }
    default:
      return fail(EF_ERR_BAD_DATA, "%s is not implemented by the reference driver",
                  op_name(op->code));
  }
}

ef_status ef_model_finish(ef_model* model) {
  if (!model) return fail(EF_ERR_NULL, "finish: null model");
  if (model->finished) return fail(EF_ERR_BAD_STATE, "finish: model already finished");
  if (!model->identified) return fail(EF_ERR_BAD_DATA, "finish: inputs and outputs not identified");
  for (uint32_t i = 0; i < model->n_operations; ++i) {
    const ef_operation* op = &model->operations[i];
    TRY(conform(model, op->code, op->n_in, op->in, op->n_out, op->out, 1, "finish"));
    TRY(check_operation(model, op));
  }
  model->finished = 1;
  return EF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Compilation                                                                                */
/* ------------------------------------------------------------------------------------------ */

ef_status ef_compilation_create(ef_model* model, ef_compilation** compilation) {
  if (!model || !compilation) return fail(EF_ERR_NULL, "compilation_create: null argument");
  if (!model->finished) return fail(EF_ERR_BAD_STATE, "compilation_create: model not finished");
  *compilation = (ef_compilation*)calloc(1, sizeof(ef_compilation));
  if (!*compilation) return fail(EF_ERR_NOMEM, "compilation_create: out of memory");
  (*compilation)->model = model;
  (*compilation)->preference = 1;
  return EF_OK;
}

void ef_compilation_free(ef_compilation* c) {
  if (!c) return;
  if (c->scratch)
    for (uint32_t i = 0; i < c->model->n_operands; ++i) free(c->scratch[i]);
  free(c->scratch);
  free(c->order);
  free(c);
}

ef_status ef_compilation_set_preference(ef_compilation* c, int32_t preference) {
  if (!c) return fail(EF_ERR_NULL, "setPreference: null compilation");
  if (c->finished) return fail(EF_ERR_BAD_STATE, "setPreference: compilation already finished");
  if (preference < 0 || preference > 2) return fail(EF_ERR_BAD_DATA, "unknown preference %d", preference);
  /* The reference kernels have one speed: the preference is recorded, not acted on. */
  c->preference = preference;
  return EF_OK;
}

ef_status ef_compilation_finish(ef_compilation* c) {
  if (!c) return fail(EF_ERR_NULL, "compilation_finish: null compilation");
  if (c->finished) return fail(EF_ERR_BAD_STATE, "compilation_finish: already finished");
  const ef_model* m = c->model;
  c->order = (uint32_t*)malloc((m->n_operations ? m->n_operations : 1) * sizeof(uint32_t));
  c->scratch = (float**)calloc(m->n_operands ? m->n_operands : 1, sizeof(float*));
  char* ready = (char*)calloc(m->n_operands ? m->n_operands : 1, 1);
  char* done = (char*)calloc(m->n_operations ? m->n_operations : 1, 1);
  if (!c->order || !c->scratch || !ready || !done) {
    free(ready);
    free(done);
    return fail(EF_ERR_NOMEM, "compilation_finish: out of memory");
  }
  for (uint32_t i = 0; i < m->n_operands; ++i)
    ready[i] = m->operands[i].value != NULL || m->operands[i].model_input >= 0;
  uint32_t placed = 0;
  while (placed < m->n_operations) {
    int progress = 0;
    for (uint32_t k = 0; k < m->n_operations; ++k) {
      if (done[k]) continue;
      const ef_operation* op = &m->operations[k];
      int ok = 1;
      for (uint32_t i = 0; ok && i < op->n_in; ++i) ok = ready[op->in[i]];
      if (!ok) continue;
      for (uint32_t i = 0; i < op->n_out; ++i) ready[op->out[i]] = 1;
      done[k] = 1;
      c->order[placed++] = k;
      progress = 1;
    }
    if (!progress) break;
  }
  ef_status status = EF_OK;
  if (placed < m->n_operations) {
    status = fail(EF_ERR_BAD_DATA, "compilation_finish: some operations read operands nothing writes");
  }
  for (uint32_t i = 0; status == EF_OK && i < m->n_outputs; ++i)
    if (!ready[m->outputs[i]]) status = fail(EF_ERR_BAD_DATA, "output %u is never written", i);
  for (uint32_t i = 0; status == EF_OK && i < m->n_operands; ++i) {
    const ef_operand* o = &m->operands[i];
    if (is_tensor_type(o->type) && !o->value && o->model_input < 0 && o->model_output < 0) {
      c->scratch[i] = (float*)malloc(ef_shape_count(&o->shape) * sizeof(float));
      if (!c->scratch[i]) status = fail(EF_ERR_NOMEM, "compilation_finish: out of memory");
    }
  }
  free(ready);
  free(done);
  if (status == EF_OK) c->finished = 1;
  return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Execution                                                                                  */
/* ------------------------------------------------------------------------------------------ */

ef_status ef_execution_create(ef_compilation* c, ef_execution** execution) {
  if (!c || !execution) return fail(EF_ERR_NULL, "execution_create: null argument");
  if (!c->finished) return fail(EF_ERR_BAD_STATE, "execution_create: compilation not finished");
  ef_execution* e = (ef_execution*)calloc(1, sizeof(ef_execution));
  if (!e) return fail(EF_ERR_NOMEM, "execution_create: out of memory");
  const ef_model* m = c->model;
  e->compilation = c;
  e->inputs = (const void**)calloc(m->n_inputs ? m->n_inputs : 1, sizeof(void*));
  e->input_lengths = (size_t*)calloc(m->n_inputs ? m->n_inputs : 1, sizeof(size_t));
  e->outputs = (void**)calloc(m->n_outputs ? m->n_outputs : 1, sizeof(void*));
  e->output_lengths = (size_t*)calloc(m->n_outputs ? m->n_outputs : 1, sizeof(size_t));
  if (!e->inputs || !e->input_lengths || !e->outputs || !e->output_lengths) {
    ef_execution_free(e);
    return fail(EF_ERR_NOMEM, "execution_create: out of memory");
  }
  *execution = e;
  return EF_OK;
}

void ef_execution_free(ef_execution* e) {
  if (!e) return;
  free((void*)e->inputs);
  free(e->input_lengths);
  free(e->outputs);
  free(e->output_lengths);
  free(e);
}

ef_status ef_execution_set_input(ef_execution* e, int32_t index, const void* buffer, size_t length) {
  if (!e || !buffer) return fail(EF_ERR_NULL, "setInput: null argument");
  const ef_model* m = e->compilation->model;
  if (index < 0 || (uint32_t)index >= m->n_inputs) return fail(EF_ERR_BAD_DATA, "setInput: no input %d", index);
  size_t need = operand_bytes(&m->operands[m->inputs[index]]);
  if (length != need) return fail(EF_ERR_BAD_DATA, "setInput %d: %zu bytes, expected %zu", index, length, need);
  e->inputs[index] = buffer;
  e->input_lengths[index] = length;
  return EF_OK;
}

ef_status ef_execution_set_output(ef_execution* e, int32_t index, void* buffer, size_t length) {
  if (!e || !buffer) return fail(EF_ERR_NULL, "setOutput: null argument");
  const ef_model* m = e->compilation->model;
  if (index < 0 || (uint32_t)index >= m->n_outputs) return fail(EF_ERR_BAD_DATA, "setOutput: no output %d", index);
  size_t need = operand_bytes(&m->operands[m->outputs[index]]);
  if (length < need) return fail(EF_ERR_BAD_DATA, "setOutput %d: %zu bytes, expected %zu", index, length, need);
  e->outputs[index] = buffer;
  e->output_lengths[index] = length;
  return EF_OK;
}

static float* data_of(const ef_execution* e, uint32_t index) {
  const ef_model* m = e->compilation->model;
  const ef_operand* o = &m->operands[index];
  if (o->value) return (float*)o->value;
  if (o->model_input >= 0) return (float*)e->inputs[o->model_input];
  if (o->model_output >= 0) return (float*)e->outputs[o->model_output];
  return e->compilation->scratch[index];
}

static int32_t i32_of(const ef_model* m, const ef_operation* op, uint32_t i) {
  return *(const int32_t*)m->operands[op->in[i]].value;
}

static void run_operation(const ef_execution* e, const ef_operation* op) {
  const ef_model* m = e->compilation->model;
  const ef_shape* s0 = &m->operands[op->in[0]].shape;
  const ef_shape* so = &m->operands[op->out[0]].shape;
  float* out = data_of(e, op->out[0]);
  const float* x = data_of(e, op->in[0]);
  switch (op->code) {
    case EF_ADD:
    case EF_SUB:
    case EF_MUL:
    case EF_DIV:
    case EF_MAXIMUM:
    case EF_MINIMUM:
    case EF_POW:
      ef_binary(op->code, x, s0, data_of(e, op->in[1]), &m->operands[op->in[1]].shape, out, so);
      if (op->n_in == 3) ef_activation(out, ef_shape_count(so), i32_of(m, op, 2));
      break;
    case EF_CONV_2D:
    case EF_DEPTHWISE_CONV_2D:
    case EF_GROUPED_CONV_2D: {
      int32_t pad[4], stride[2], dil[2] = {1, 1}, groups = 1, act;
      for (int i = 0; i < 4; ++i) pad[i] = i32_of(m, op, 3 + i);
      stride[0] = i32_of(m, op, 7);
      stride[1] = i32_of(m, op, 8);
      if (op->code == EF_CONV_2D) {
        act = i32_of(m, op, 9);
        if (op->n_in == 13) dil[0] = i32_of(m, op, 11), dil[1] = i32_of(m, op, 12);
      } else {
        act = i32_of(m, op, 10);
        if (op->code == EF_GROUPED_CONV_2D) groups = i32_of(m, op, 9);
        if (op->code == EF_DEPTHWISE_CONV_2D && op->n_in == 14)
          dil[0] = i32_of(m, op, 12), dil[1] = i32_of(m, op, 13);
      }
      ef_conv2d(x, s0, data_of(e, op->in[1]), &m->operands[op->in[1]].shape,
                data_of(e, op->in[2]), out, so, pad, stride, dil, groups,
                op->code == EF_DEPTHWISE_CONV_2D);
      ef_activation(out, ef_shape_count(so), act);
      break;
    }
    case EF_AVERAGE_POOL_2D:
    case EF_MAX_POOL_2D: {
      int32_t pad[4], stride[2], filter[2];
      for (int i = 0; i < 4; ++i) pad[i] = i32_of(m, op, 1 + i);
      stride[0] = i32_of(m, op, 5);
      stride[1] = i32_of(m, op, 6);
      filter[0] = i32_of(m, op, 7);
      filter[1] = i32_of(m, op, 8);
      ef_pool2d(op->code == EF_MAX_POOL_2D, x, s0, out, so, pad, stride, filter);
      ef_activation(out, ef_shape_count(so), i32_of(m, op, 9));
      break;
    }
    case EF_FULLY_CONNECTED: {
      const ef_shape* sw = &m->operands[op->in[1]].shape;
      ef_fully_connected(x, data_of(e, op->in[1]), data_of(e, op->in[2]), out, so->dims[0],
                         sw->dims[0], sw->dims[1]);
      ef_activation(out, ef_shape_count(so), i32_of(m, op, 3));
      break;
    }
    case EF_SOFTMAX: {
      int32_t axis = op->n_in == 3 ? i32_of(m, op, 2) : -1;
      if (axis < 0) axis += (int32_t)s0->rank;
      ef_softmax(x, s0, *(const float*)m->operands[op->in[1]].value, (uint32_t)axis, out);
      break;
    }
    case EF_CONCATENATION: {
      int32_t axis = i32_of(m, op, op->n_in - 1);
      if (axis < 0) axis += (int32_t)so->rank;
      size_t outer = 1, inner = 1;
      for (int32_t d = 0; d < axis; ++d) outer *= so->dims[d];
      for (uint32_t d = (uint32_t)axis + 1; d < so->rank; ++d) inner *= so->dims[d];
      size_t offset = 0;
      for (uint32_t i = 0; i + 1 < op->n_in; ++i) {
        const ef_shape* si = &m->operands[op->in[i]].shape;
        const float* src = data_of(e, op->in[i]);
        size_t chunk = si->dims[axis] * inner;
        for (size_t o = 0; o < outer; ++o)
          memcpy(out + o * so->dims[axis] * inner + offset, src + o * chunk, chunk * sizeof(float));
        offset += chunk;
      }
      break;
    }
    case EF_RESHAPE:
      if (out != x) memcpy(out, x, ef_shape_count(so) * sizeof(float));
      break;
    case EF_TRANSPOSE:
      ef_transpose(x, s0, (const int32_t*)m->operands[op->in[1]].value, out);
      break;
    case EF_MEAN: {
      const ef_operand* axes = &m->operands[op->in[1]];
      int reduce[EF_MAX_RANK] = {0};
      for (uint32_t i = 0; i < axes->shape.dims[0]; ++i) {
        int32_t a = ((const int32_t*)axes->value)[i];
        reduce[a < 0 ? a + (int32_t)s0->rank : a] = 1;
      }
      ef_mean(x, s0, reduce, out);
      break;
    }
    case EF_BATCH_MATMUL: {
      const int adj_a = *(const uint8_t*)m->operands[op->in[2]].value != 0;
      const int adj_b = *(const uint8_t*)m->operands[op->in[3]].value != 0;
      ef_batch_matmul(x, s0, data_of(e, op->in[1]), &m->operands[op->in[1]].shape, adj_a, adj_b,
                      out, so);
      break;
    }
    default:
      ef_unary(op->code, x, out, ef_shape_count(so));
      break;
  }
}

/* TEST HOOK, off unless EDGEFARM_NN_TEST_BREAK_OP names an operation (ADD, LOGISTIC, ...):
 * then every operation of that type adds 0.5 to each element of its output. It exists so
 * that a test can plant a known-wrong kernel and check that accuracy.first_divergence finds
 * the subgraph holding it (tests/harness/byoc/test_first_divergence.py); nothing else sets
 * it. Phones never see it: it lives in the host reference driver only. */
#define EF_NAMED(op) {EF_##op, #op}
static const struct {
  int32_t code;
  const char* name;
} k_operation_names[] = {
    EF_NAMED(ADD), EF_NAMED(AVERAGE_POOL_2D), EF_NAMED(CONCATENATION), EF_NAMED(CONV_2D),
    EF_NAMED(DEPTHWISE_CONV_2D), EF_NAMED(FLOOR), EF_NAMED(FULLY_CONNECTED), EF_NAMED(LOGISTIC),
    EF_NAMED(MAX_POOL_2D), EF_NAMED(MUL), EF_NAMED(RELU), EF_NAMED(RELU1), EF_NAMED(RELU6),
    EF_NAMED(RESHAPE), EF_NAMED(SOFTMAX), EF_NAMED(TANH), EF_NAMED(DIV), EF_NAMED(MEAN),
    EF_NAMED(SUB), EF_NAMED(TRANSPOSE), EF_NAMED(ABS), EF_NAMED(EXP), EF_NAMED(GROUPED_CONV_2D),
    EF_NAMED(LOG), EF_NAMED(MAXIMUM), EF_NAMED(MINIMUM), EF_NAMED(NEG), EF_NAMED(POW),
    EF_NAMED(RSQRT), EF_NAMED(SQRT), EF_NAMED(HARD_SWISH), EF_NAMED(BATCH_MATMUL),
};
#undef EF_NAMED

static int32_t test_broken_operation(void) {
  const char* name = getenv("EDGEFARM_NN_TEST_BREAK_OP");
  if (!name || !*name) return -1;
  for (size_t i = 0; i < sizeof(k_operation_names) / sizeof(k_operation_names[0]); ++i)
    if (strcmp(name, k_operation_names[i].name) == 0) return k_operation_names[i].code;
  return -1;
}

ef_status ef_execution_compute(ef_execution* e) {
  if (!e) return fail(EF_ERR_NULL, "compute: null execution");
  const ef_compilation* c = e->compilation;
  const ef_model* m = c->model;
  for (uint32_t i = 0; i < m->n_inputs; ++i)
    if (!e->inputs[i]) return fail(EF_ERR_BAD_DATA, "compute: input %u not set", i);
  for (uint32_t i = 0; i < m->n_outputs; ++i)
    if (!e->outputs[i]) return fail(EF_ERR_BAD_DATA, "compute: output %u not set", i);
  const int32_t broken = test_broken_operation();
  for (uint32_t k = 0; k < m->n_operations; ++k) {
    const ef_operation* op = &m->operations[c->order[k]];
    run_operation(e, op);
    if (op->code == broken) {
      float* out = data_of(e, op->out[0]);
      const size_t n = ef_shape_count(&m->operands[op->out[0]].shape);
      for (size_t i = 0; i < n; ++i) out[i] += 0.5f;
    }
  }
  return EF_OK;
}
