/*
 * The APIs' rules per operation, as the reference driver enforces them when a model is built:
 * the table (ef_rules.h) is generated from harness/byoc/api_rules.py when the driver is built,
 * so Python (the translator) and C (this driver) read one source. See that module for the
 * documentation each rule comes from.
 */
#ifndef EF_CONFORM_H_
#define EF_CONFORM_H_

#include <stddef.h>
#include <stdint.h>

/* The NNAPI feature level this driver's runtime implements, as a phone's
 * libneuralnetworks.so does (ANeuralNetworks_getRuntimeFeatureLevel). The host build of an
 * artifact that targets level L links the driver built with -DEF_NNAPI_FEATURE_LEVEL=L: it
 * behaves as a phone of that level, and rejects what such a phone's runtime would. */
#ifndef EF_NNAPI_FEATURE_LEVEL
#define EF_NNAPI_FEATURE_LEVEL 8
#endif

typedef struct {
  const char* name;
  uint32_t types[9]; /* per NNAPI feature level 0..8: the allowed type codes, bit (1 << code) */
  uint32_t ranks;    /* the allowed ranks, bit (1 << rank) */
  int8_t same_type_as; /* -1, or the input whose type this one must have */
  uint8_t param;       /* read when the model is built: the driver needs a constant */
} ef_rule_arg;

typedef struct {
  const char* name;
  uint8_t since;
  uint8_t n_args;
  uint8_t variadic; /* args[0] repeats, once or more */
  const ef_rule_arg* args;
  uint8_t n_counts;
  const uint8_t (*counts)[2]; /* {input count, feature level from which it is allowed} */
} ef_rule_form;

typedef struct {
  int32_t code;
  const char* name;
  uint8_t since;        /* NNAPI feature level that brought it */
  uint8_t neuron_level; /* 0: not in the Neuron Adapter API; else the NNAPI level it follows */
  uint8_t outputs;
  uint8_t n_forms;
  const ef_rule_form* forms;
} ef_rule_op;

/* Which API a model was created through. */
typedef enum { EF_API_NNAPI = 0, EF_API_NEURON = 1 } ef_api;

typedef struct {
  int32_t type;
  uint32_t rank;
  int constant;
} ef_operand_info;

/* Checks one operation against the rules of ``api`` (NNAPI at EF_NNAPI_FEATURE_LEVEL);
 * 0 when it conforms, else -1 with the rule broken written into ``why``. ``check_constants``:
 * also the driver's need for constant parameters (at finish, when values are known). */
int ef_conform_check(ef_api api, int32_t code, uint32_t n_in, const ef_operand_info* in,
                     uint32_t n_out, const ef_operand_info* out, int check_constants, char* why,
                     size_t why_size);

/* The name of an operation code, or NULL when the table does not know it. */
const char* ef_operation_name(int32_t code);

#endif /* EF_CONFORM_H_ */
