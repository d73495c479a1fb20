/* Plain reference kernels of the host driver: float32, 4-D tensors NHWC. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ef_core.h"

size_t ef_shape_count(const ef_shape* s) {
  size_t n = 1;
  for (uint32_t i = 0; i < s->rank; ++i) n *= s->dims[i];
  return n;
}

static void strides_of(const ef_shape* s, size_t* strides) {
  size_t acc = 1;
  for (int i = (int)s->rank - 1; i >= 0; --i) {
    strides[i] = acc;
    acc *= s->dims[i];
  }
}

void ef_activation(float* data, size_t n, int32_t act) {
  size_t i;
  switch (act) {
    case 1: /* RELU */
      for (i = 0; i < n; ++i) data[i] = data[i] < 0.0f ? 0.0f : data[i];
      break;
    case 2: /* RELU1: clamp to [-1, 1] */
      for (i = 0; i < n; ++i) data[i] = data[i] < -1.0f ? -1.0f : (data[i] > 1.0f ? 1.0f : data[i]);
      break;
    case 3: /* RELU6 */
      for (i = 0; i < n; ++i) data[i] = data[i] < 0.0f ? 0.0f : (data[i] > 6.0f ? 6.0f : data[i]);
      break;
    default:
      break;
  }
}

static float binary_op(int32_t code, float x, float y) {
  switch (code) {
    case EF_ADD: return x + y;
    case EF_SUB: return x - y;
    case EF_MUL: return x * y;
    case EF_DIV: return x / y;
    case EF_MAXIMUM: return x > y ? x : y;
    case EF_MINIMUM: return x < y ? x : y;
    case EF_POW: return powf(x, y);
    default: return 0.0f;
  }
}

/* Broadcasting as numpy does: shapes aligned at their last dimension, size-1 dims stretched. */
void ef_binary(int32_t code, const float* a, const ef_shape* sa, const float* b,
               const ef_shape* sb, float* out, const ef_shape* so) {
  size_t sta[EF_MAX_RANK] = {0}, stb[EF_MAX_RANK] = {0}, sto[EF_MAX_RANK];
  size_t tmp[EF_MAX_RANK];
  uint32_t r = so->rank;
  strides_of(sa, tmp);
  for (uint32_t i = 0; i < sa->rank; ++i) {
    uint32_t o = r - sa->rank + i;
    sta[o] = sa->dims[i] == 1 ? 0 : tmp[i];
  }
  strides_of(sb, tmp);
  for (uint32_t i = 0; i < sb->rank; ++i) {
    uint32_t o = r - sb->rank + i;
    stb[o] = sb->dims[i] == 1 ? 0 : tmp[i];
  }
  strides_of(so, sto);
  size_t n = ef_shape_count(so);
  for (size_t k = 0; k < n; ++k) {
    size_t rem = k, ia = 0, ib = 0;
    for (uint32_t d = 0; d < r; ++d) {
      size_t idx = rem / sto[d];
      rem %= sto[d];
      ia += idx * sta[d];
      ib += idx * stb[d];
    }
    out[k] = binary_op(code, a[ia], b[ib]);
  }
}

void ef_unary(int32_t code, const float* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float x = in[i];
    float y;
    switch (code) {
      case EF_RELU: y = x < 0.0f ? 0.0f : x; break;
      case EF_RELU1: y = x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x); break;
      case EF_RELU6: y = x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x); break;
      case EF_LOGISTIC: y = 1.0f / (1.0f + expf(-x)); break;
      case EF_TANH: y = tanhf(x); break;
      case EF_FLOOR: y = floorf(x); break;
      case EF_ABS: y = fabsf(x); break;
      case EF_EXP: y = expf(x); break;
      case EF_LOG: y = logf(x); break;
      case EF_NEG: y = -x; break;
      case EF_SQRT: y = sqrtf(x); break;
      case EF_RSQRT: y = 1.0f / sqrtf(x); break;
      case EF_HARD_SWISH: { /* x * relu6(x + 3) / 6, in that order */
        float r = x + 3.0f;
        r = r < 0.0f ? 0.0f : (r > 6.0f ? 6.0f : r);
        y = x * r / 6.0f;
        break;
      }
      default: y = x; break;
    }
    out[i] = y;
  }
}

/* pad = {left, right, top, bottom}, stride = {w, h}, dil = {w, h}.
 * Regular and grouped filters are [Co, KH, KW, Ci/groups]; a depthwise filter is
 * [1, KH, KW, Co] with Co = Ci * multiplier. */
void ef_conv2d(const float* in, const ef_shape* si, const float* filt, const ef_shape* sf,
               const float* bias, float* out, const ef_shape* so, const int32_t pad[4],
               const int32_t stride[2], const int32_t dil[2], int32_t groups, int depthwise) {
  const int64_t N = si->dims[0], H = si->dims[1], W = si->dims[2], Ci = si->dims[3];
  const int64_t OH = so->dims[1], OW = so->dims[2], Co = so->dims[3];
  const int64_t KH = sf->dims[1], KW = sf->dims[2];
  const int64_t cig = depthwise ? 1 : Ci / groups;
  const int64_t cog = depthwise ? Co / Ci : Co / groups;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox)
        for (int64_t oc = 0; oc < Co; ++oc) {
          const int64_t g = oc / cog;
          float acc = bias ? bias[oc] : 0.0f;
          for (int64_t ky = 0; ky < KH; ++ky) {
            const int64_t iy = oy * stride[1] - pad[2] + ky * dil[1];
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < KW; ++kx) {
              const int64_t ix = ox * stride[0] - pad[0] + kx * dil[0];
              if (ix < 0 || ix >= W) continue;
              const float* px = in + ((n * H + iy) * W + ix) * Ci + g * cig;
              if (depthwise) {
                acc += px[0] * filt[(ky * KW + kx) * Co + oc];
              } else {
                const float* pw = filt + ((oc * KH + ky) * KW + kx) * cig;
                for (int64_t c = 0; c < cig; ++c) acc += px[c] * pw[c];
              }
            }
          }
          out[((n * OH + oy) * OW + ox) * Co + oc] = acc;
        }
}

/* Average pooling counts only the elements inside the input (padding excluded). */
void ef_pool2d(int is_max, const float* in, const ef_shape* si, float* out, const ef_shape* so,
               const int32_t pad[4], const int32_t stride[2], const int32_t filter[2]) {
  const int64_t N = si->dims[0], H = si->dims[1], W = si->dims[2], C = si->dims[3];
  const int64_t OH = so->dims[1], OW = so->dims[2];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox)
        for (int64_t c = 0; c < C; ++c) {
          float acc = is_max ? -FLT_MAX : 0.0f;
          int64_t count = 0;
          for (int64_t ky = 0; ky < filter[1]; ++ky) {
            const int64_t iy = oy * stride[1] - pad[2] + ky;
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < filter[0]; ++kx) {
              const int64_t ix = ox * stride[0] - pad[0] + kx;
              if (ix < 0 || ix >= W) continue;
              const float v = in[((n * H + iy) * W + ix) * C + c];
              if (is_max) {
                acc = v > acc ? v : acc;
              } else {
                acc += v;
              }
              ++count;
            }
          }
          out[((n * OH + oy) * OW + ox) * C + c] = is_max ? acc : (count ? acc / count : 0.0f);
        }
}

void ef_fully_connected(const float* in, const float* w, const float* bias, float* out,
                        uint32_t batch, uint32_t units, uint32_t depth) {
  for (uint32_t b = 0; b < batch; ++b)
    for (uint32_t u = 0; u < units; ++u) {
      float acc = bias ? bias[u] : 0.0f;
      const float* x = in + (size_t)b * depth;
      const float* wu = w + (size_t)u * depth;
      for (uint32_t k = 0; k < depth; ++k) acc += x[k] * wu[k];
      out[(size_t)b * units + u] = acc;
    }
}

void ef_softmax(const float* in, const ef_shape* s, float beta, uint32_t axis, float* out) {
  size_t outer = 1, inner = 1;
  const size_t len = s->dims[axis];
  for (uint32_t i = 0; i < axis; ++i) outer *= s->dims[i];
  for (uint32_t i = axis + 1; i < s->rank; ++i) inner *= s->dims[i];
  for (size_t o = 0; o < outer; ++o)
    for (size_t i = 0; i < inner; ++i) {
      const float* x = in + o * len * inner + i;
      float* y = out + o * len * inner + i;
      float mx = -FLT_MAX;
      for (size_t k = 0; k < len; ++k) mx = x[k * inner] > mx ? x[k * inner] : mx;
      float sum = 0.0f;
      for (size_t k = 0; k < len; ++k) {
        y[k * inner] = expf((x[k * inner] - mx) * beta);
        sum += y[k * inner];
      }
      for (size_t k = 0; k < len; ++k) y[k * inner] /= sum;
    }
}

/* out[j...] = in[...]: output dimension d is input dimension perm[d]. */
void ef_transpose(const float* in, const ef_shape* si, const int32_t* perm, float* out) {
  size_t sti[EF_MAX_RANK], sto[EF_MAX_RANK];
  ef_shape so;
  so.rank = si->rank;
  for (uint32_t d = 0; d < si->rank; ++d) so.dims[d] = si->dims[perm[d]];
  strides_of(si, sti);
  strides_of(&so, sto);
  const size_t n = ef_shape_count(si);
  for (size_t k = 0; k < n; ++k) {
    size_t rem = k, src = 0;
    for (uint32_t d = 0; d < so.rank; ++d) {
      const size_t idx = rem / sto[d];
      rem %= sto[d];
      src += idx * sti[perm[d]];
    }
    out[k] = in[src];
  }
}

/* reduce[d] != 0 marks a reduced dimension; the output has the kept dimensions in order. */
void ef_mean(const float* in, const ef_shape* si, const int* reduce, float* out) {
  size_t sti[EF_MAX_RANK], sto[EF_MAX_RANK];
  ef_shape so;
  size_t count = 1;
  so.rank = si->rank;
  for (uint32_t d = 0; d < si->rank; ++d) {
    so.dims[d] = reduce[d] ? 1 : si->dims[d];
    if (reduce[d]) count *= si->dims[d];
  }
  strides_of(si, sti);
  strides_of(&so, sto);
  const size_t n_out = ef_shape_count(&so);
  memset(out, 0, n_out * sizeof(float));
  const size_t n = ef_shape_count(si);
  for (size_t k = 0; k < n; ++k) {
    size_t rem = k, dst = 0;
    for (uint32_t d = 0; d < si->rank; ++d) {
      const size_t idx = rem / sti[d];
      rem %= sti[d];
      if (!reduce[d]) dst += idx * sto[d];
    }
    out[dst] += in[k];
  }
  for (size_t k = 0; k < n_out; ++k) out[k] /= (float)count;
}

/* Batch dimensions must be equal; adj_* transposes the last two dimensions of that side. */
void ef_batch_matmul(const float* a, const ef_shape* sa, const float* b, const ef_shape* sb,
                     int adj_a, int adj_b, float* out, const ef_shape* so) {
  const uint32_t r = sa->rank;
  const size_t M = so->dims[r - 2], Nn = so->dims[r - 1];
  const size_t K = adj_a ? sa->dims[r - 2] : sa->dims[r - 1];
  size_t batch = 1;
  for (uint32_t i = 0; i + 2 < r; ++i) batch *= so->dims[i];
  const size_t a_mat = (size_t)sa->dims[r - 2] * sa->dims[r - 1];
  const size_t b_mat = (size_t)sb->dims[r - 2] * sb->dims[r - 1];
  for (size_t bi = 0; bi < batch; ++bi) {
    const float* pa = a + bi * a_mat;
    const float* pb = b + bi * b_mat;
    float* po = out + bi * M * Nn;
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < Nn; ++j) {
        float acc = 0.0f;
        for (size_t k = 0; k < K; ++k) {
          const float x = adj_a ? pa[k * M + i] : pa[i * K + k];
          const float y = adj_b ? pb[j * K + k] : pb[k * Nn + j];
          acc += x * y;
        }
        po[i * Nn + j] = acc;
      }
  }
}
