/*
 * The host reference driver's core, shared by its NNAPI and Neuron faces: a model is operands
 * and operations; a compilation checks every operation's operands and shapes and orders the
 * operations; an execution runs plain C reference kernels over float32 NHWC tensors.
 *
 * It is a correctness reference, not an accelerator: single-threaded, unoptimised loops.
 */
#ifndef EF_CORE_H_
#define EF_CORE_H_

#include <stddef.h>
#include <stdint.h>

#define EF_MAX_RANK 6

/* Operand type codes and operation codes are the APIs' own (identical in NNAPI and Neuron). */
enum {
  EF_FLOAT32 = 0,
  EF_INT32 = 1,
  EF_UINT32 = 2,
  EF_TENSOR_FLOAT32 = 3,
  EF_TENSOR_INT32 = 4,
  EF_BOOL = 6,
};

enum {
  EF_ADD = 0,
  EF_AVERAGE_POOL_2D = 1,
  EF_CONCATENATION = 2,
  EF_CONV_2D = 3,
  EF_DEPTHWISE_CONV_2D = 4,
  EF_FLOOR = 8,
  EF_FULLY_CONNECTED = 9,
  EF_LOGISTIC = 14,
  EF_MAX_POOL_2D = 17,
  EF_MUL = 18,
  EF_RELU = 19,
  EF_RELU1 = 20,
  EF_RELU6 = 21,
  EF_RESHAPE = 22,
  EF_SOFTMAX = 25,
  EF_TANH = 28,
  EF_DIV = 30,
  EF_MEAN = 31,
  EF_SUB = 36,
  EF_TRANSPOSE = 37,
  EF_ABS = 38,
  EF_EXP = 49,
  EF_GROUPED_CONV_2D = 55,
  EF_LOG = 60,
  EF_MAXIMUM = 65,
  EF_MINIMUM = 66,
  EF_NEG = 67,
  EF_POW = 70,
  EF_RSQRT = 83,
  EF_SQRT = 88,
  EF_HARD_SWISH = 99,
  EF_BATCH_MATMUL = 102,
};

/* Internal status; each API face maps it to its own result codes. */
typedef enum {
  EF_OK = 0,
  EF_ERR_NOMEM,
  EF_ERR_NULL,
  EF_ERR_BAD_DATA,
  EF_ERR_BAD_STATE,
  EF_ERR_OP_FAILED,
} ef_status;

typedef struct ef_model ef_model;
typedef struct ef_compilation ef_compilation;
typedef struct ef_execution ef_execution;

/* api: EF_API_NNAPI or EF_API_NEURON (ef_conform.h), whose rules the model follows. */
ef_status ef_model_create(ef_model** model, int api);
void ef_model_free(ef_model* model);
ef_status ef_model_add_operand(ef_model* model, int32_t type, uint32_t rank,
                               const uint32_t* dims);
ef_status ef_model_set_value(ef_model* model, int32_t index, const void* buffer, size_t length);
ef_status ef_model_add_operation(ef_model* model, int32_t code, uint32_t n_in,
                                 const uint32_t* in, uint32_t n_out, const uint32_t* out);
ef_status ef_model_identify(ef_model* model, uint32_t n_in, const uint32_t* in, uint32_t n_out,
                            const uint32_t* out);
ef_status ef_model_finish(ef_model* model);

ef_status ef_compilation_create(ef_model* model, ef_compilation** compilation);
void ef_compilation_free(ef_compilation* compilation);
ef_status ef_compilation_set_preference(ef_compilation* compilation, int32_t preference);
ef_status ef_compilation_finish(ef_compilation* compilation);

ef_status ef_execution_create(ef_compilation* compilation, ef_execution** execution);
void ef_execution_free(ef_execution* execution);
ef_status ef_execution_set_input(ef_execution* execution, int32_t index, const void* buffer,
                                 size_t length);
ef_status ef_execution_set_output(ef_execution* execution, int32_t index, void* buffer,
                                  size_t length);
ef_status ef_execution_compute(ef_execution* execution);

/* The last error's explanation (per thread), for diagnostics: EDGEFARM_NN_VERBOSE=1 prints it. */
const char* ef_last_error(void);

/* Kernels (ef_kernels.c). All tensors float32, 4-D ones NHWC. */
typedef struct {
  uint32_t rank;
  uint32_t dims[EF_MAX_RANK];
} ef_shape;

size_t ef_shape_count(const ef_shape* s);
void ef_activation(float* data, size_t n, int32_t act);
void ef_binary(int32_t code, const float* a, const ef_shape* sa, const float* b,
               const ef_shape* sb, float* out, const ef_shape* so);
void ef_unary(int32_t code, const float* in, float* out, size_t n);
void ef_conv2d(const float* in, const ef_shape* si, const float* filt, const ef_shape* sf,
               const float* bias, float* out, const ef_shape* so, const int32_t pad[4],
               const int32_t stride[2], const int32_t dil[2], int32_t groups, int depthwise);
void ef_pool2d(int is_max, const float* in, const ef_shape* si, float* out, const ef_shape* so,
               const int32_t pad[4], const int32_t stride[2], const int32_t filter[2]);
void ef_fully_connected(const float* in, const float* w, const float* bias, float* out,
                        uint32_t batch, uint32_t units, uint32_t depth);
void ef_softmax(const float* in, const ef_shape* s, float beta, uint32_t axis, float* out);
void ef_transpose(const float* in, const ef_shape* si, const int32_t* perm, float* out);
void ef_mean(const float* in, const ef_shape* si, const int* reduce, float* out);
void ef_batch_matmul(const float* a, const ef_shape* sa, const float* b, const ef_shape* sb,
                     int adj_a, int adj_b, float* out, const ef_shape* so);

#endif /* EF_CORE_H_ */
