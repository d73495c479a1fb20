/* The NNAPI face of the host reference driver: ANeuralNetworks* over ef_core. */
#include <stdlib.h>

#include "edgefarm_nn.h"
#include "ef_conform.h"
#include "ef_core.h"

static int nnapi_code(ef_status s) {
  switch (s) {
    case EF_OK: return ANEURALNETWORKS_NO_ERROR;
    case EF_ERR_NOMEM: return ANEURALNETWORKS_OUT_OF_MEMORY;
    case EF_ERR_NULL: return ANEURALNETWORKS_UNEXPECTED_NULL;
    case EF_ERR_BAD_DATA: return ANEURALNETWORKS_BAD_DATA;
    case EF_ERR_BAD_STATE: return ANEURALNETWORKS_BAD_STATE;
    default: return ANEURALNETWORKS_OP_FAILED;
  }
}

/* Executions compute synchronously: the event exists only to be waited on and freed. */
struct ANeuralNetworksEvent {
  int status;
};

/* The runtime's feature level: the one this driver was built for (ef_conform.h). */
int64_t ANeuralNetworks_getRuntimeFeatureLevel(void) {
  static const int64_t codes[] = {0,
                                  ANEURALNETWORKS_FEATURE_LEVEL_1,
                                  ANEURALNETWORKS_FEATURE_LEVEL_2,
                                  ANEURALNETWORKS_FEATURE_LEVEL_3,
                                  ANEURALNETWORKS_FEATURE_LEVEL_4,
                                  ANEURALNETWORKS_FEATURE_LEVEL_5,
                                  ANEURALNETWORKS_FEATURE_LEVEL_6,
                                  ANEURALNETWORKS_FEATURE_LEVEL_7,
                                  ANEURALNETWORKS_FEATURE_LEVEL_8};
  return codes[EF_NNAPI_FEATURE_LEVEL];
}

int ANeuralNetworksModel_create(ANeuralNetworksModel** model) {
  return nnapi_code(ef_model_create((ef_model**)model, EF_API_NNAPI));
}

void ANeuralNetworksModel_free(ANeuralNetworksModel* model) { ef_model_free((ef_model*)model); }

int ANeuralNetworksModel_finish(ANeuralNetworksModel* model) {
  return nnapi_code(ef_model_finish((ef_model*)model));
}

int ANeuralNetworksModel_addOperand(ANeuralNetworksModel* model,
                                    const ANeuralNetworksOperandType* type) {
  if (!type) return ANEURALNETWORKS_UNEXPECTED_NULL;
  return nnapi_code(
      ef_model_add_operand((ef_model*)model, type->type, type->dimensionCount, type->dimensions));
}

int ANeuralNetworksModel_setOperandValue(ANeuralNetworksModel* model, int32_t index,
                                         const void* buffer, size_t length) {
  return nnapi_code(ef_model_set_value((ef_model*)model, index, buffer, length));
}

int ANeuralNetworksModel_addOperation(ANeuralNetworksModel* model,
                                      ANeuralNetworksOperationType type, uint32_t inputCount,
                                      const uint32_t* inputs, uint32_t outputCount,
                                      const uint32_t* outputs) {
  return nnapi_code(
      ef_model_add_operation((ef_model*)model, type, inputCount, inputs, outputCount, outputs));
}

int ANeuralNetworksModel_identifyInputsAndOutputs(ANeuralNetworksModel* model,
                                                  uint32_t inputCount, const uint32_t* inputs,
                                                  uint32_t outputCount, const uint32_t* outputs) {
  return nnapi_code(ef_model_identify((ef_model*)model, inputCount, inputs, outputCount, outputs));
}

int ANeuralNetworksCompilation_create(ANeuralNetworksModel* model,
                                      ANeuralNetworksCompilation** compilation) {
  return nnapi_code(ef_compilation_create((ef_model*)model, (ef_compilation**)compilation));
}

void ANeuralNetworksCompilation_free(ANeuralNetworksCompilation* compilation) {
  ef_compilation_free((ef_compilation*)compilation);
}

int ANeuralNetworksCompilation_setPreference(ANeuralNetworksCompilation* compilation,
                                             int32_t preference) {
  return nnapi_code(ef_compilation_set_preference((ef_compilation*)compilation, preference));
}

int ANeuralNetworksCompilation_finish(ANeuralNetworksCompilation* compilation) {
  return nnapi_code(ef_compilation_finish((ef_compilation*)compilation));
}

int ANeuralNetworksExecution_create(ANeuralNetworksCompilation* compilation,
                                    ANeuralNetworksExecution** execution) {
  return nnapi_code(
      ef_execution_create((ef_compilation*)compilation, (ef_execution**)execution));
}

void ANeuralNetworksExecution_free(ANeuralNetworksExecution* execution) {
  ef_execution_free((ef_execution*)execution);
}

int ANeuralNetworksExecution_setInput(ANeuralNetworksExecution* execution, int32_t index,
                                      const ANeuralNetworksOperandType* type,
                                      const void* buffer, size_t length) {
  (void)type; /* only fully specified models are built: the type adds nothing */
  return nnapi_code(ef_execution_set_input((ef_execution*)execution, index, buffer, length));
}

int ANeuralNetworksExecution_setOutput(ANeuralNetworksExecution* execution, int32_t index,
                                       const ANeuralNetworksOperandType* type, void* buffer,
                                       size_t length) {
  (void)type;
  return nnapi_code(ef_execution_set_output((ef_execution*)execution, index, buffer, length));
}

int ANeuralNetworksExecution_startCompute(ANeuralNetworksExecution* execution,
                                          ANeuralNetworksEvent** event) {
  if (!event) return ANEURALNETWORKS_UNEXPECTED_NULL;
  *event = (ANeuralNetworksEvent*)malloc(sizeof(ANeuralNetworksEvent));
  if (!*event) return ANEURALNETWORKS_OUT_OF_MEMORY;
  (*event)->status = nnapi_code(ef_execution_compute((ef_execution*)execution));
  return ANEURALNETWORKS_NO_ERROR;
}

int ANeuralNetworksEvent_wait(ANeuralNetworksEvent* event) {
  return event ? event->status : ANEURALNETWORKS_UNEXPECTED_NULL;
}

void ANeuralNetworksEvent_free(ANeuralNetworksEvent* event) { free(event); }
