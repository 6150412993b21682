/* Errors: system errors are built in JavaScript (so they read exactly like
 * Node's own fs errors); the addon only supplies errno, syscall and target. */
#include "cowshm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

napi_value cowshm_set_error_factory(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  bool main_thread = false;
  if (!cowshm_args(env, info, 2, argv)) return NULL;
  NAPI_OK(env, napi_get_value_bool(env, argv[1], &main_thread));
  struct cowshm_env *e = cowshm_env_get(env);
  if (e == NULL) return NULL;
  e->main_thread = main_thread;
  if (e->error_factory != NULL) napi_delete_reference(env, e->error_factory);
  NAPI_OK(env, napi_create_reference(env, argv[0], 1, &e->error_factory));
  return cowshm_undefined(env);
}

napi_value cowshm_throw_errno(napi_env env, int err, const char *syscall, const char *target) {
  struct cowshm_env *e = cowshm_env_get(env);
  napi_value factory = NULL, global, args[3], result;
  if (e != NULL && e->error_factory != NULL &&
      napi_get_reference_value(env, e->error_factory, &factory) == napi_ok && factory != NULL &&
      napi_get_global(env, &global) == napi_ok &&
      napi_create_int32(env, err, &args[0]) == napi_ok &&
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &args[1]) == napi_ok) {
    if (target != NULL)
      napi_create_string_utf8(env, target, NAPI_AUTO_LENGTH, &args[2]);
    else
      napi_get_undefined(env, &args[2]);
    if (napi_call_function(env, global, factory, 3, args, &result) == napi_ok) {
      napi_throw(env, result);
      return NULL;
    }
  }
  /* No factory (the loader always installs one): still say what failed. */
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s%s%s%s", syscall, strerror(err), target ? " '" : "",
           target ? target : "", target ? "'" : "");
  napi_throw_error(env, NULL, msg);
  return NULL;
}

napi_value cowshm_throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

napi_value cowshm_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

void cowshm_throw_napi_failure(napi_env env, const char *what, const char *file, int line) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[384];
  snprintf(msg, sizeof msg, "cowshm internal error: %s failed (%s) at %s:%d", what,
           info && info->error_message ? info->error_message : "unknown", file, line);
  napi_throw_error(env, "ERR_COWSHM_INTERNAL", msg);
}

int cowshm_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    cowshm_throw_napi_failure(env, "napi_get_cb_info", __FILE__, __LINE__);
    return 0;
  }
  if (argc < want) {
    cowshm_throw_type(env, "cowshm internal error: too few arguments to a native function");
    return 0;
  }
  return 1;
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
