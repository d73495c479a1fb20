/* Enforcing the APIs' rules per operation (see ef_conform.h; the table is ef_rules.h). */
#include "ef_conform.h"

#include <stdio.h>
#include <string.h>

#include "ef_rules.h"

static const char* type_name(int32_t type) {
  switch (type) {
    case 0: return "FLOAT32";
    case 1: return "INT32";
    case 2: return "UINT32";
    case 3: return "TENSOR_FLOAT32";
    case 4: return "TENSOR_INT32";
    case 6: return "BOOL";
    case 8: return "TENSOR_FLOAT16";
    case 10: return "FLOAT16";
    default: return "an unknown type";
  }
}

static const ef_rule_op* find_rule(int32_t code) {
  for (size_t i = 0; i < EF_N_RULES; ++i)
    if (ef_rules[i].code == code) return &ef_rules[i];
  return NULL;
}

const char* ef_operation_name(int32_t code) {
  const ef_rule_op* r = find_rule(code);
  return r ? r->name : NULL;
}

static int count_ok(const ef_rule_form* f, uint32_t n, int level) {
  if (f->variadic) return n >= f->n_args;
  for (uint8_t k = 0; k < f->n_counts; ++k)
    if (f->counts[k][0] == n && f->counts[k][1] <= level) return 1;
  return 0;
}

static const ef_rule_arg* arg_of(const ef_rule_form* f, uint32_t i, uint32_t n_in) {
  if (!f->variadic) return &f->args[i];
  uint32_t repeats = n_in - (f->n_args - 1u);
  return i < repeats ? &f->args[0] : &f->args[i - repeats + 1];
}

static const char* api_label(ef_api api, int level, char* buf, size_t size) {
  if (api == EF_API_NEURON) return "the Neuron Adapter API";
  snprintf(buf, size, "NNAPI feature level %d", level);
  return buf;
}

static void types_text(uint32_t mask, char* buf, size_t size) {
  buf[0] = 0;
  for (int32_t t = 0; t < 32; ++t)
    if (mask & (1u << t))
      snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", buf[0] ? " or " : "", type_name(t));
}

static int check_form(const ef_rule_op* r, const ef_rule_form* f, uint32_t n_in,
                      const ef_operand_info* in, int level, ef_api api, int check_constants,
                      char* why, size_t size) {
  char label[64], allowed[160];
  for (uint32_t i = 0; i < n_in; ++i) {
    const ef_rule_arg* a = arg_of(f, i, n_in);
    uint32_t mask = a->types[level];
    if (in[i].type < 0 || in[i].type > 31 || !(mask & (1u << in[i].type))) {
      types_text(mask, allowed, sizeof(allowed));
      snprintf(why, size, "%s input %u (%s, %s form) is %s; %s takes %s", r->name, i, a->name,
               f->name, type_name(in[i].type), api_label(api, level, label, sizeof(label)),
               allowed);
      return -1;
    }
    if (a->same_type_as >= 0 && in[a->same_type_as].type != in[i].type) {
      snprintf(why, size, "%s input %u (%s, %s form) is %s, input %d %s", r->name, i, a->name,
               f->name, type_name(in[i].type), a->same_type_as,
               type_name(in[a->same_type_as].type));
      return -1;
    }
    if (in[i].rank > 31 || !(a->ranks & (1u << in[i].rank))) {
      allowed[0] = 0;
      for (uint32_t k = 0; k < 32; ++k)
        if (a->ranks & (1u << k))
          snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s%u",
                   allowed[0] ? ", " : "", k);
      snprintf(why, size, "%s input %u (%s, %s form) has rank %u; allowed: %s", r->name, i,
               a->name, f->name, in[i].rank, allowed);
      return -1;
    }
    if (check_constants && a->param && !in[i].constant) {
      snprintf(why, size,
               "%s input %u (%s, %s form) must be a constant (the reference driver reads it "
               "when the model is built)",
               r->name, i, a->name, f->name);
      return -1;
    }
  }
  return 0;
}

int ef_conform_check(ef_api api, int32_t code, uint32_t n_in, const ef_operand_info* in,
                     uint32_t n_out, const ef_operand_info* out, int check_constants, char* why,
                     size_t size) {
  char label[64];
  const ef_rule_op* r = find_rule(code);
  if (!r) {
    snprintf(why, size, "operation code %d is not one this driver knows the rules of", code);
    return -1;
  }
  int level;
  if (api == EF_API_NEURON) {
    if (!r->neuron_level) {
      snprintf(why, size, "%s is not available in the Neuron Adapter API", r->name);
      return -1;
    }
    level = r->neuron_level;
  } else {
    level = EF_NNAPI_FEATURE_LEVEL;
    if (r->since > level) {
      snprintf(why, size, "%s needs NNAPI feature level %d; this runtime is level %d", r->name,
               r->since, level);
      return -1;
    }
  }
  if (n_out != r->outputs) {
    snprintf(why, size, "%s has %u output(s), not %u", r->name, r->outputs, n_out);
    return -1;
  }
  /* The newest form whose input count fits is checked last and reported. */
  int matched = 0, reported = 0;
  for (int k = (int)r->n_forms - 1; k >= 0; --k) {
    const ef_rule_form* f = &r->forms[k];
    if (f->since > level || !count_ok(f, n_in, level)) continue;
    char attempt[512];
    matched = 1;
    if (check_form(r, f, n_in, in, level, api, check_constants, attempt, sizeof(attempt)) == 0)
      goto outputs;
    if (!reported) {
      snprintf(why, size, "%s", attempt);
      reported = 1;
    }
  }
  if (matched) return -1;
  {
    char counts[128] = "";
    for (uint8_t k = 0; k < r->n_forms; ++k) {
      const ef_rule_form* f = &r->forms[k];
      if (f->since > level) continue;
      if (f->variadic) {
        snprintf(counts + strlen(counts), sizeof(counts) - strlen(counts), "%s%u or more",
                 counts[0] ? " or " : "", f->n_args);
        continue;
      }
      for (uint8_t c = 0; c < f->n_counts; ++c)
        if (f->counts[c][1] <= level)
          snprintf(counts + strlen(counts), sizeof(counts) - strlen(counts), "%s%u",
                   counts[0] ? " or " : "", f->counts[c][0]);
    }
    int later = 0;
    for (uint8_t k = 0; api == EF_API_NNAPI && k < r->n_forms; ++k)
      for (uint8_t c = 0; c < r->forms[k].n_counts; ++c)
        if (r->forms[k].counts[c][0] == n_in && (!later || r->forms[k].counts[c][1] < later))
          later = r->forms[k].counts[c][1];
    if (later)
      snprintf(why, size, "%s takes %s inputs at %s, not %u (%u inputs from NNAPI feature level %d)",
               r->name, counts, api_label(api, level, label, sizeof(label)), n_in, n_in, later);
    else
      snprintf(why, size, "%s takes %s inputs at %s, not %u", r->name, counts,
               api_label(api, level, label, sizeof(label)), n_in);
    return -1;
  }
outputs:
  for (uint32_t i = 0; i < n_out; ++i)
    if (out[i].type != in[0].type) {
      snprintf(why, size, "%s output %u is %s; it must have input 0's type, %s", r->name, i,
               type_name(out[i].type), type_name(in[0].type));
      return -1;
    }
  return 0;
}
