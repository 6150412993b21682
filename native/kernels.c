/* Kernels: whole-view reductions that a JS loop would run several times
 * slower than memory bandwidth allows. Built for AVX-512 (x86-64-v4), AVX2
 * and a baseline, chosen at load time (GCC function multiversioning): with
 * the caches and page tables warm, a sum over shared memory runs near 30 GB/s
 * here, and the AVX-512 clone widens int32 to int64 a zmm register at a time,
 * as `gcc -O3 -march=native` code does, where AVX2 alone stays ~15% behind. */
#include "cowshm.h"

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"), optimize("O3")))
#else
#define MULTIVERSION
#endif

#define DEFINE_INT_SUM(name, type)                                           \
  MULTIVERSION static __int128 name(const type *p, size_t n) {               \
    /* Blocks small enough that an int64 accumulator cannot overflow. */      \
    __int128 total = 0;                                                      \
    while (n > 0) {                                                          \
      size_t m = n < ((size_t)1 << 28) ? n : ((size_t)1 << 28);              \
      int64_t acc = 0;                                                       \
      for (size_t i = 0; i < m; i++) acc += p[i];                            \
      total += acc;                                                          \
      p += m;                                                                \
      n -= m;                                                                \
    }                                                                        \
    return total;                                                            \
  }

DEFINE_INT_SUM(sum_i8, int8_t)
DEFINE_INT_SUM(sum_u8, uint8_t)
DEFINE_INT_SUM(sum_i16, int16_t)
DEFINE_INT_SUM(sum_u16, uint16_t)
DEFINE_INT_SUM(sum_i32, int32_t)
DEFINE_INT_SUM(sum_u32, uint32_t)

MULTIVERSION static __int128 sum_i64(const int64_t *p, size_t n) {
  __int128 total = 0;
  for (size_t i = 0; i < n; i++) total += p[i];
  return total;
}

MULTIVERSION static __int128 sum_u64(const uint64_t *p, size_t n) {
  __int128 total = 0;
  for (size_t i = 0; i < n; i++) total += p[i];
  return total;
}

static double sum_f32(const float *p, size_t n) {
  double acc = 0;
  for (size_t i = 0; i < n; i++) acc += p[i];
  return acc;
}

static double sum_f64(const double *p, size_t n) {
  double acc = 0;
  for (size_t i = 0; i < n; i++) acc += p[i];
  return acc;
}

/* iota: p[i] = start + i * step, stored as JavaScript stores it in that
 * array type (integers wrap modulo 2^bits, floats round). Filling a view this
 * way runs at memory bandwidth, where `a[i] = i` in JavaScript runs at ~1-2
 * GB/s. TypeScript checks that every value is a safe integer, so the int64
 * arithmetic is exact; it is done unsigned all the same, where a wrap would
 * not be undefined behaviour. */
#define IOTA_VALUE(i) ((int64_t)((uint64_t)start + (uint64_t)(i) * (uint64_t)step))
#define DEFINE_IOTA(name, type)                                              \
  MULTIVERSION static void name(type *p, size_t n, int64_t start, int64_t step) { \
    for (size_t i = 0; i < n; i++) p[i] = (type)(uint64_t)IOTA_VALUE(i);     \
  }

DEFINE_IOTA(iota_8, uint8_t)
DEFINE_IOTA(iota_16, uint16_t)
DEFINE_IOTA(iota_32, uint32_t)
DEFINE_IOTA(iota_64, uint64_t)

MULTIVERSION static void iota_u8c(uint8_t *p, size_t n, int64_t start, int64_t step) {
  for (size_t i = 0; i < n; i++) {
    int64_t v = IOTA_VALUE(i);
    p[i] = v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
  }
}

MULTIVERSION static void iota_f32(float *p, size_t n, int64_t start, int64_t step) {
  for (size_t i = 0; i < n; i++) p[i] = (float)(double)IOTA_VALUE(i);
}

MULTIVERSION static void iota_f64(double *p, size_t n, int64_t start, int64_t step) {
  for (size_t i = 0; i < n; i++) p[i] = (double)IOTA_VALUE(i);
}

static napi_value bigint_from_i128(napi_env env, __int128 v) {
  int sign = v < 0;
  unsigned __int128 m = sign ? -(unsigned __int128)v : (unsigned __int128)v;
  uint64_t words[2] = {(uint64_t)m, (uint64_t)(m >> 64)};
  napi_value out = NULL;
  napi_create_bigint_words(env, sign, words[1] ? 2 : 1, words, &out);
  return out;
}

/* sum(typedArray) -> bigint for integer arrays, number for float arrays. */
static napi_value sum_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok)
    return cowshm_throw_type(env, "The \"array\" argument must be a TypedArray");
  if (length == 0 || data == NULL) return type == napi_float32_array || type == napi_float64_array
                                              ? cowshm_num(env, 0)
                                              : bigint_from_i128(env, 0);
  switch (type) {
    case napi_int8_array: return bigint_from_i128(env, sum_i8(data, length));
    case napi_uint8_array:
    case napi_uint8_clamped_array: return bigint_from_i128(env, sum_u8(data, length));
    case napi_int16_array: return bigint_from_i128(env, sum_i16(data, length));
    case napi_uint16_array: return bigint_from_i128(env, sum_u16(data, length));
    case napi_int32_array: return bigint_from_i128(env, sum_i32(data, length));
    case napi_uint32_array: return bigint_from_i128(env, sum_u32(data, length));
    case napi_bigint64_array: return bigint_from_i128(env, sum_i64(data, length));
    case napi_biguint64_array: return bigint_from_i128(env, sum_u64(data, length));
    case napi_float32_array: return cowshm_num(env, sum_f32(data, length));
    case napi_float64_array: return cowshm_num(env, sum_f64(data, length));
  }
  return cowshm_throw_type(env, "The \"array\" argument must be a TypedArray");
}

/* iota(typedArray, start, step): safe integers, checked in TypeScript with
 * the last value of the sequence. */
static napi_value iota_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  napi_typedarray_type type;
  size_t length;
  void *data;
  double startd, stepd;
  if (!cowshm_args(env, info, 3, argv)) return NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok)
    return cowshm_throw_type(env, "The \"array\" argument must be a TypedArray");
  NAPI_OK(env, napi_get_value_double(env, argv[1], &startd));
  NAPI_OK(env, napi_get_value_double(env, argv[2], &stepd));
  /* Checked again here, with the length from the array's internal slot: the
   * sequence must stay within the safe integers, as JavaScript computes it. */
  const double safe = 9007199254740991.0;
  if (!(startd >= -safe && startd <= safe) || !(stepd >= -safe && stepd <= safe) || floor(startd) != startd ||
      floor(stepd) != stepd)
    return cowshm_throw_range(env, "The \"start\" and \"step\" arguments must be safe integers");
  int64_t start = (int64_t)startd, step = (int64_t)stepd;
  if (length == 0 || data == NULL) return cowshm_undefined(env);
  __int128 last = (__int128)start + (__int128)(length - 1) * step;
  if (last > (__int128)9007199254740991LL || last < -(__int128)9007199254740991LL)
    return cowshm_throw_range(env, "The \"start\" argument must be a safe integer with start + (length - 1) × step safe too");
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array: iota_8(data, length, start, step); break;
    case napi_uint8_clamped_array: iota_u8c(data, length, start, step); break;
    case napi_int16_array:
    case napi_uint16_array: iota_16(data, length, start, step); break;
    case napi_int32_array:
    case napi_uint32_array: iota_32(data, length, start, step); break;
    case napi_bigint64_array:
    case napi_biguint64_array: iota_64(data, length, start, step); break;
    case napi_float32_array: iota_f32(data, length, start, step); break;
    case napi_float64_array: iota_f64(data, length, start, step); break;
    default: return cowshm_throw_type(env, "The \"array\" argument must be a TypedArray");
  }
  return cowshm_undefined(env);
}

napi_value cowshm_init_kernels(napi_env env, napi_value exports) {
  napi_value fn;
  NAPI_OK(env, napi_create_function(env, "sum", NAPI_AUTO_LENGTH, sum_js, NULL, &fn));
  NAPI_OK(env, napi_set_named_property(env, exports, "sum", fn));
  NAPI_OK(env, napi_create_function(env, "iota", NAPI_AUTO_LENGTH, iota_js, NULL, &fn));
  NAPI_OK(env, napi_set_named_property(env, exports, "iota", fn));
  return exports;
}
