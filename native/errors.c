/* Errors. The addon never picks an error class itself: JavaScript hands it
 * two factories once at load (init), src/errors.ts's systemError and
 * cowshmError, and every throw below goes through one of them, so an error
 * with a given code has the same class whether C or TypeScript refused. */
#include "cowshm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void set_ref(napi_env env, napi_ref *slot, napi_ref ref) {
  if (*slot != NULL) napi_delete_reference(env, *slot);
  *slot = ref;
}

/* init(systemError, cowshmError, isMainThread) */
napi_value cowshm_init_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  bool main_thread = false;
  napi_ref system_error, refusal;
  if (!cowshm_args(env, info, 3, argv)) return NULL;
  struct cowshm_env *e = cowshm_env_get(env);
  if (e == NULL) return cowshm_throw_code(env, "ERR_COWSHM_INTERNAL", "cowshm internal error: no state for this environment");
  NAPI_OK(env, napi_get_value_bool(env, argv[2], &main_thread));
  NAPI_OK(env, napi_create_reference(env, argv[0], 1, &system_error));
  if (napi_create_reference(env, argv[1], 1, &refusal) != napi_ok) {
    napi_delete_reference(env, system_error);
    cowshm_throw_napi_failure(env, "napi_create_reference", __FILE__, __LINE__);
    return NULL;
  }
  set_ref(env, &e->system_error, system_error);
  set_ref(env, &e->refusal, refusal);
  e->main_thread = main_thread;
  return cowshm_undefined(env);
}

static napi_value str_or_undefined(napi_env env, const char *s) {
  napi_value v = NULL;
  if (s == NULL || napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v) != napi_ok) napi_get_undefined(env, &v);
  return v;
}

/* Calls a factory and throws what it returns; 0 when that was not possible
 * (no factory yet, or JavaScript cannot run), so the caller falls back. */
static int throw_made(napi_env env, napi_ref which, size_t argc, napi_value *args) {
  napi_value factory = NULL, global, result;
  for (size_t i = 0; i < argc; i++)
    if (args[i] == NULL) return 0;
  if (which == NULL || napi_get_reference_value(env, which, &factory) != napi_ok || factory == NULL ||
      napi_get_global(env, &global) != napi_ok ||
      napi_call_function(env, global, factory, argc, args, &result) != napi_ok)
    return 0;
  return napi_throw(env, result) == napi_ok;
}

napi_value cowshm_throw_errno(napi_env env, int err, const char *syscall, const char *target) {
  struct cowshm_env *e = cowshm_env_get(env);
  napi_value args[3] = {NULL, str_or_undefined(env, syscall), str_or_undefined(env, target)};
  napi_create_int32(env, err, &args[0]);
  if (e != NULL && throw_made(env, e->system_error, 3, args)) return NULL;
  /* No factory (the loader always installs one): still say what failed. */
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s%s%s%s", syscall, strerror(err), target ? " '" : "",
           target ? target : "", target ? "'" : "");
  napi_throw_error(env, NULL, msg);
  return NULL;
}

napi_value cowshm_throw_code(napi_env env, const char *code, const char *msg) {
  struct cowshm_env *e = cowshm_env_get(env);
  napi_value args[2] = {str_or_undefined(env, code), str_or_undefined(env, msg)};
  if (e != NULL && throw_made(env, e->refusal, 2, args)) return NULL;
  napi_throw_error(env, code, msg);
  return NULL;
}

napi_value cowshm_throw_range(napi_env env, const char *msg) { return cowshm_throw_code(env, "ERR_OUT_OF_RANGE", msg); }

napi_value cowshm_throw_type(napi_env env, const char *msg) { return cowshm_throw_code(env, "ERR_INVALID_ARG_TYPE", msg); }

void cowshm_throw_napi_failure(napi_env env, const char *what, const char *file, int line) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[384];
  snprintf(msg, sizeof msg, "cowshm internal error: %s failed (%s) at %s:%d", what,
           info && info->error_message ? info->error_message : "unknown", file, line);
  cowshm_throw_code(env, "ERR_COWSHM_INTERNAL", msg);
}

int cowshm_args_data(napi_env env, napi_callback_info info, size_t want, size_t room, napi_value *argv, void **data) {
  size_t argc = room; /* napi fills the slots past those given with undefined */
  if (napi_get_cb_info(env, info, &argc, argv, NULL, data) != napi_ok) {
    cowshm_throw_napi_failure(env, "napi_get_cb_info", __FILE__, __LINE__);
    return 0;
  }
  if (argc < want) {
    cowshm_throw_type(env, "cowshm internal error: too few arguments to a native function");
    return 0;
  }
  return 1;
}

int cowshm_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  return cowshm_args_data(env, info, want, want, argv, NULL);
}

int cowshm_get_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    cowshm_throw_type(env, "cowshm internal error: expected a number");
    return 0;
  }
  return 1;
}

int cowshm_get_u64(napi_env env, napi_value v, uint64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    cowshm_throw_type(env, "cowshm internal error: expected a number");
    return 0;
  }
  if (!(d >= 0) || d > 9007199254740991.0 || floor(d) != d) {
    cowshm_throw_range(env, "cowshm internal error: expected a non-negative safe integer");
    return 0;
  }
  *out = (uint64_t)d;
  return 1;
}

int cowshm_get_str(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) {
    cowshm_throw_type(env, "cowshm internal error: expected a string");
    return 0;
  }
  if (len + 1 >= size) {
    cowshm_throw_range(env, "cowshm internal error: string too long");
    return 0;
  }
  return 1;
}

napi_value cowshm_num(napi_env env, double d) {
  napi_value v = NULL;
  napi_create_double(env, d, &v);
  return v;
}

napi_value cowshm_undefined(napi_env env) {
  napi_value v = NULL;
  napi_get_undefined(env, &v);
  return v;
}
