/* The Neuron Adapter face of the host reference driver: Neuron* over ef_core. */
#include "edgefarm_nn.h"
#include "ef_conform.h"
#include "ef_core.h"

static int neuron_code(ef_status s) {
  switch (s) {
    case EF_OK: return NEURON_NO_ERROR;
    case EF_ERR_NOMEM: return NEURON_OUT_OF_MEMORY;
    case EF_ERR_NULL: return NEURON_UNEXPECTED_NULL;
    case EF_ERR_BAD_DATA: return NEURON_BAD_DATA;
    case EF_ERR_BAD_STATE: return NEURON_BAD_STATE;
    default: return NEURON_OP_FAILED;
  }
}

int NeuronModel_create(NeuronModel** model) {
  return neuron_code(ef_model_create((ef_model**)model, EF_API_NEURON));
}

void NeuronModel_free(NeuronModel* model) { ef_model_free((ef_model*)model); }

int NeuronModel_finish(NeuronModel* model) { return neuron_code(ef_model_finish((ef_model*)model)); }

int NeuronModel_addOperand(NeuronModel* model, const NeuronOperandType* type) {
  if (!type) return NEURON_UNEXPECTED_NULL;
  return neuron_code(
      ef_model_add_operand((ef_model*)model, type->type, type->dimensionCount, type->dimensions));
}

int NeuronModel_setOperandValue(NeuronModel* model, int32_t index, const void* buffer,
                                size_t length) {
  return neuron_code(ef_model_set_value((ef_model*)model, index, buffer, length));
}

int NeuronModel_addOperation(NeuronModel* model, NeuronOperationType type, uint32_t inputCount,
                             const uint32_t* inputs, uint32_t outputCount,
                             const uint32_t* outputs) {
  return neuron_code(ef_model_add_operation((ef_model*)model, (int32_t)type, inputCount, inputs,
                                            outputCount, outputs));
}

int NeuronModel_identifyInputsAndOutputs(NeuronModel* model, uint32_t inputCount,
                                         const uint32_t* inputs, uint32_t outputCount,
                                         const uint32_t* outputs) {
  return neuron_code(ef_model_identify((ef_model*)model, inputCount, inputs, outputCount, outputs));
}

int NeuronCompilation_create(NeuronModel* model, NeuronCompilation** compilation) {
  return neuron_code(ef_compilation_create((ef_model*)model, (ef_compilation**)compilation));
}

void NeuronCompilation_free(NeuronCompilation* compilation) {
  ef_compilation_free((ef_compilation*)compilation);
}

int NeuronCompilation_setPreference(NeuronCompilation* compilation, int32_t preference) {
  return neuron_code(ef_compilation_set_preference((ef_compilation*)compilation, preference));
}

int NeuronCompilation_finish(NeuronCompilation* compilation) {
  return neuron_code(ef_compilation_finish((ef_compilation*)compilation));
}

int NeuronExecution_create(NeuronCompilation* compilation, NeuronExecution** execution) {
  return neuron_code(ef_execution_create((ef_compilation*)compilation, (ef_execution**)execution));
}

void NeuronExecution_free(NeuronExecution* execution) { ef_execution_free((ef_execution*)execution); }

int NeuronExecution_setInput(NeuronExecution* execution, int32_t index,
                             const NeuronOperandType* type, const void* buffer, size_t length) {
  (void)type; /* the adapter takes NULL here */
  return neuron_code(ef_execution_set_input((ef_execution*)execution, index, buffer, length));
}

int NeuronExecution_setOutput(NeuronExecution* execution, int32_t index,
                              const NeuronOperandType* type, void* buffer, size_t length) {
  (void)type;
  return neuron_code(ef_execution_set_output((ef_execution*)execution, index, buffer, length));
}

int NeuronExecution_compute(NeuronExecution* execution) {
  return neuron_code(ef_execution_compute((ef_execution*)execution));
}
